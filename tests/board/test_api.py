"""The board's JSON API on a real server: runs created from JSON train to the end while /events
streams their metrics; bad configs list every problem; stop, restart, a killed process, and form
fields that try to run shell commands."""

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.train.test_sft_stage import tiny_run_keys
from tuneforge.board.app import create_board_app
from tuneforge.board.launcher import Launcher
from tuneforge.runs.registry import RunRegistry
from tuneforge.serve.server import BackgroundServer

try:
    import httpx2 as httpx
except ImportError:
    import httpx

REPO = Path(__file__).resolve().parents[2]


def Server(app):  # noqa: N802 - reads like the class it returns
    return BackgroundServer(app=app)


@contextmanager
def running_board(tmp_path: Path, roots: list[Path]) -> Iterator[BackgroundServer]:
    """A board on a free port with a fresh registry, allowed to use `roots` (and tmp_path, the repository)."""
    registry = RunRegistry(tmp_path / "runs.sqlite")
    launcher = Launcher(registry, tmp_path / "board-runs", max_concurrent=2, poll_s=0.2)
    app = create_board_app(registry, launcher, roots=[tmp_path, REPO, *roots])
    with Server(app) as server:
        server.registry, server.launcher, server.tmp = registry, launcher, tmp_path
        yield server
    launcher.close()
    app.state.chats.close()


@pytest.fixture
def board(tmp_path, tiny_model_dir):
    with running_board(tmp_path, [tiny_model_dir]) as server:
        yield server


def run_config(tiny_model_dir: Path, out: Path, **extra) -> dict:
    return tiny_run_keys(tiny_model_dir, out, **extra)


def events(url: str, run_id: str) -> list[tuple[str, object]]:
    out = []
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=120) as response:
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def wait_status(url: str, run_id: str, wanted: set[str], timeout: float = 90) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run = httpx.get(f"{url}/api/runs/{run_id}").json()
        if run["status"] in wanted:
            return run
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} is still {run['status']}")


def test_a_run_created_from_json_trains_and_streams_its_metrics_then_chats(board, tiny_model_dir):
    created = httpx.post(f"{board.url}/api/runs", json=run_config(tiny_model_dir, board.tmp / "out")).json()
    assert created["status"] in ("queued", "running")
    stream = events(board.url, created["id"])
    metrics = [data for kind, data in stream if kind == "metric"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    statuses = [data["status"] for kind, data in stream if kind == "status"]
    assert statuses[-1] == "done" and any(kind == "log" for kind, _ in stream)
    assert httpx.get(f"{board.url}/api/runs/{created['id']}/metrics").json() == metrics
    run = httpx.get(f"{board.url}/api/runs/{created['id']}").json()
    assert run["exit_code"] == 0 and run["config"]["max_steps"] == 4
    # a finished run is finished: resuming it would change its model
    again = httpx.post(f"{board.url}/api/runs/{created['id']}/resume")
    assert again.status_code == 409 and "is finished" in again.text

    # a board restart (a new registry object on the same file) shows the same runs
    again = RunRegistry(board.registry.path)
    assert created["id"] in [r.id for r in again.list()]
    chat_with_the_adapter_of(board, tiny_model_dir, created["id"], board.tmp / "out")


def test_a_bad_config_lists_every_problem(board):
    body = {"lora_rnak": 8, "learning_rate": -1, "output_dir": "/etc/tuneforge-run"}
    reply = httpx.post(f"{board.url}/api/runs", json=body)
    assert reply.status_code == 422
    problems = reply.json()["problems"]
    assert len(problems) == 3
    assert any("did you mean 'lora_rank'" in p for p in problems)
    assert any("learning_rate" in p for p in problems)
    assert any("outside the folders" in p for p in problems)
    json_header = {"Content-Type": "application/json"}
    assert httpx.post(f"{board.url}/api/runs", content=b"{oops", headers=json_header).status_code == 400
    assert httpx.post(f"{board.url}/api/runs", content=b"{oops").status_code == 415  # not JSON: refused


def test_stop_writes_a_checkpoint_and_resume_finishes_the_run(board, tiny_model_dir):
    config = run_config(tiny_model_dir, board.tmp / "long", max_steps=400, save_steps=1000)
    run_id = httpx.post(f"{board.url}/api/runs", json=config).json()["id"]
    end = time.monotonic() + 90
    while time.monotonic() < end and len(httpx.get(f"{board.url}/api/runs/{run_id}/metrics").json()) < 3:
        time.sleep(0.1)
    httpx.post(f"{board.url}/api/runs/{run_id}/stop")
    stopped = wait_status(board.url, run_id, {"stopped", "failed", "done"})
    assert stopped["status"] == "stopped" and stopped["exit_code"] == 128 + signal.SIGTERM
    assert list((board.tmp / "long").glob("checkpoint-*"))


def test_a_killed_run_is_marked_failed_with_its_last_log_lines(board, tiny_model_dir):
    config = run_config(tiny_model_dir, board.tmp / "killed", max_steps=400)
    run_id = httpx.post(f"{board.url}/api/runs", json=config).json()["id"]
    run = wait_status(board.url, run_id, {"running"})
    end = time.monotonic() + 90
    while time.monotonic() < end and not httpx.get(f"{board.url}/api/runs/{run_id}/metrics").json():
        time.sleep(0.1)
    os.kill(run["pid"], signal.SIGKILL)
    failed = wait_status(board.url, run_id, {"failed", "done", "stopped"})
    assert failed["status"] == "failed"
    assert "killed" in failed["reason"] and "tuneforge" in failed["reason"]  # the log tail is kept


def test_form_fields_never_reach_a_shell(board, tiny_model_dir):
    # every field is YAML data for the child process; the dataset name fails the run at load time
    hostile_template = run_config(tiny_model_dir, board.tmp / "t", template="`touch pwned`", max_steps=1)
    refused = httpx.post(f"{board.url}/api/runs", json=hostile_template)  # an unknown template name: no run
    assert refused.status_code == 422 and "template '`touch pwned`' is unknown" in refused.text
    config = run_config(tiny_model_dir, board.tmp / "$(touch pwned)", dataset="x; touch pwned", max_steps=1)
    run_id = httpx.post(f"{board.url}/api/runs", json=config).json()["id"]
    assert wait_status(board.url, run_id, {"failed", "done"})["status"] == "failed"
    for root in (board.tmp, REPO, Path.cwd(), Path("/tmp")):
        assert not list(root.rglob("pwned")) if root != Path("/tmp") else not (root / "pwned").exists()


def test_a_run_started_in_a_terminal_is_registered(tmp_path, tiny_model_dir, monkeypatch):
    from tuneforge.cli.main import main
    from tuneforge.config import build_config, dump_config
    from tuneforge.runs.registry import RUNS_DB_ENV

    monkeypatch.setenv(RUNS_DB_ENV, str(tmp_path / "runs.sqlite"))
    monkeypatch.delenv("TUNEFORGE_RUN_ID", raising=False)
    dump_config(
        build_config(run_config(tiny_model_dir, tmp_path / "cli", max_steps=1)), tmp_path / "cfg.yaml"
    )
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    assert main(["train", str(tmp_path / "cfg.yaml"), "dataset=nope", f"output_dir={tmp_path / 'cli2'}"]) == 2
    runs = RunRegistry(tmp_path / "runs.sqlite").list()
    assert [(r.status, r.exit_code) for r in runs] == [("failed", 2), ("done", 0)]  # newest first
    assert runs[1].pid == os.getpid() and runs[1].output_dir == str(tmp_path / "cli")


def chat_with_the_adapter_of(board, tiny_model_dir: Path, run_id: str, out: Path) -> None:
    """/api/chat streams the answer of the finished run's adapter, named by run id or by folder, as the
    inference engine gives it; unknown runs and folders outside the roots are refused."""
    from tuneforge.config import ModelArguments
    from tuneforge.inference.engine import InferenceEngine
    from tuneforge.inference.sampling import SamplingParams

    messages = [{"role": "user", "content": "Who are you?"}]
    body = {
        "model": str(tiny_model_dir),
        "adapters": [run_id],
        "adapter": run_id,
        "messages": messages,
        "temperature": 0,
        "max_new_tokens": 12,
    }
    pieces = []
    with httpx.stream("POST", f"{board.url}/api/chat", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[6:])["text"])
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(tiny_model_dir)), adapters={run_id: str(out)}
    )
    try:
        expected = engine.generate(
            engine.render(messages), SamplingParams(max_new_tokens=12, temperature=0), run_id
        ).text
    finally:
        engine.close()
    assert len(pieces) > 1 and "".join(pieces) == expected
    folder = str(out)  # the same adapter named by its folder answers the same
    by_path = httpx.post(
        f"{board.url}/api/chat", json={**body, "adapters": [folder], "adapter": folder}, timeout=60
    ).text
    assert (
        "".join(json.loads(x[6:])["text"] for x in by_path.splitlines() if x.startswith("data: {"))
        == expected
    )
    bad = httpx.post(f"{board.url}/api/chat", json={**body, "adapters": ["nope", "/etc"], "model": "/etc"})
    problems = bad.json()[
        "problems"
    ]  # unknown run, folder outside the roots, model outside, adapter not loaded
    assert bad.status_code == 422 and len(problems) == 4 and "/etc is neither" in problems[1]
