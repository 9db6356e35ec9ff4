"""The board without a token, attacked as a hostile web page and a careless client would: every finding of
the hardening review that concerns the board is replayed here and must stay fixed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

try:  # the HTTP client installed with openai (httpx2), else httpx
    import httpx2 as httpx
except ImportError:
    import httpx

from tests.board.test_api import board, run_config  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("board")


def runs(board) -> int:  # noqa: F811
    return len(httpx.get(f"{board.url}/api/runs").json())


def test_writes_from_another_origin_are_refused(board, tiny_model_dir):  # noqa: F811
    body = json.dumps(run_config(tiny_model_dir, board.tmp / "x"))
    for headers in (
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
        {
            "Origin": "http://127.0.0.1:1",
            "Content-Type": "application/json",
        },  # another port is another origin
        {"Origin": "null", "Content-Type": "application/json"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
        {"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"},
    ):
        reply = httpx.post(f"{board.url}/api/runs", content=body, headers=headers)
        assert reply.status_code == 403 and "own pages only" in reply.text, headers
    # a text/plain POST (what an HTML form or a no-CORS fetch can send) is not JSON
    plain = httpx.post(f"{board.url}/api/runs", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert runs(board) == 0
    # the board's own page may write
    own = httpx.post(
        f"{board.url}/api/yaml",
        json={"lora_rank": 4},
        headers={"Origin": board.url, "Sec-Fetch-Site": "same-origin"},
    )
    assert own.status_code == 200


def test_dns_rebinding_gets_no_answer(board):  # noqa: F811
    for method in ("GET", "POST"):
        reply = httpx.request(method, f"{board.url}/api/runs", headers={"Host": "attacker.example:7860"})
        assert reply.status_code == 421 and "attacker.example" in reply.text


def test_bodies_are_limited_in_bytes_and_keys(board):  # noqa: F811
    big = b'{"x": "' + b"a" * (2 << 20) + b'"}'
    sized = httpx.post(f"{board.url}/api/yaml", content=big, headers={"Content-Type": "application/json"})
    assert sized.status_code == 413

    def chunks():
        yield b'{"x": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    chunked = httpx.post(
        f"{board.url}/api/yaml", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    many = httpx.post(f"{board.url}/api/runs", json={f"k{i}": i for i in range(20_000)})
    assert many.status_code == 413 and "more than 2000 keys" in many.text


def test_a_yaml_alias_bomb_is_refused(board):  # noqa: F811
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    reply = httpx.post(f"{board.url}/api/parse-yaml", json={"yaml": bomb})
    assert reply.status_code == 422 and "aliases" in reply.text and len(reply.content) < 1000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/runs", []),
        ("/api/runs", "lora_rank: 8"),
        ("/api/yaml", ["a"]),
        ("/api/parse-yaml", {"yaml": 5}),
        ("/api/preview", {"rows": "abc", "dataset": "identity"}),
        ("/api/chat", [1, 2]),
    ],
)
def test_malformed_request_shapes_get_a_4xx_with_a_sentence(board, path, body):  # noqa: F811
    reply = httpx.post(f"{board.url}{path}", json=body)
    assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text)
    assert "Traceback" not in reply.text
    broken = httpx.post(f"{board.url}{path}", content=b"{oops", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.text


def test_stop_never_signals_a_process_that_reused_the_runs_pid(board, tiny_model_dir):  # noqa: F811
    run_id = board.registry.create(run_config(tiny_model_dir, board.tmp / "old"), status="queued").id
    board.registry.update(run_id, status="running", pid=12345, started=time.time() - 3600)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        board.registry.update(run_id, pid=stranger.pid)  # the run's process died; its pid went to another
        httpx.post(f"{board.url}/api/runs/{run_id}/stop")
        time.sleep(0.5)
        assert stranger.poll() is None, "the stranger was signalled"
        assert board.registry.get(run_id).status == "failed"
    finally:
        stranger.kill()
        stranger.wait()


def test_every_path_key_and_dataset_file_stays_inside_the_roots(board, tiny_model_dir):  # noqa: F811
    outside = "/etc"
    for key, value in [
        ("model_name_or_path", outside),
        ("adapter_name_or_path", [str(tiny_model_dir), outside]),
        ("resume_from_checkpoint", outside),
        ("ref_model", outside),
        ("reward_model", "../../../../.."),
        ("cache_dir", "/tmp/somewhere-else"),
    ]:
        reply = httpx.post(
            f"{board.url}/api/runs", json={**run_config(tiny_model_dir, board.tmp / "p"), key: value}
        )
        assert reply.status_code == 422, (key, reply.text)
        assert any(f"key '{key}'" in p and "outside the folders" in p for p in reply.json()["problems"]), key
    data = board.tmp / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"sneaky": {"file_name": "../../../../etc/hostname"}}))
    sneaky = {**run_config(tiny_model_dir, board.tmp / "p"), "dataset": "sneaky", "dataset_dir": str(data)}
    reply = httpx.post(f"{board.url}/api/runs", json=sneaky)
    assert reply.status_code == 422 and "its file ../../../../etc/hostname is outside" in reply.text
    code = {**run_config(tiny_model_dir, board.tmp / "p"), "stage": "grpo", "reward_funcs": "os:system"}
    reply = httpx.post(f"{board.url}/api/runs", json=code)
    assert reply.status_code == 422 and "would import Python code" in reply.text
    # zoo names and hub ids are not paths
    fine = {**run_config(tiny_model_dir, board.tmp / "p"), "stage": "dpo", "ref_model": "Qwen/Qwen3-0.6B"}
    assert "outside" not in httpx.post(f"{board.url}/api/runs", json=fine).text
    assert runs(board) == 1
