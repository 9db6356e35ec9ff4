"""The board's pages as HTML from the real server (the browser tests come with the pages' scripts)."""

import json

from tests.board.test_api import REPO, Server, board, httpx, run_config  # noqa: F401 - fixture
from tuneforge.board.app import create_board_app
from tuneforge.board.launcher import Launcher
from tuneforge.config import GROUPS
from tuneforge.runs.registry import RunRegistry


def test_train_form_has_every_config_key_with_its_default(board):  # noqa: F811
    html = httpx.get(f"{board.url}/train").text
    for group in ("model", "data", "finetuning", "training"):
        for key in GROUPS[group].model_fields:
            assert f'name="{key}"' in html, key
    assert 'value="0.0001"' in html  # learning_rate's default
    for section in ("Model", "Method", "Data", "Training", "Output"):
        assert f"<legend>{section}</legend>" in html
    assert httpx.get(f"{board.url}/static/board.js").status_code == 200


def test_language_switch_and_cookie(board):  # noqa: F811
    zh = httpx.get(f"{board.url}/runs?lang=zh")
    assert "运行记录" in zh.text and zh.cookies.get("tuneforge_lang") == "zh"
    again = httpx.get(f"{board.url}/train", cookies={"tuneforge_lang": "zh"})
    assert "开始训练" in again.text
    assert "Start training" in httpx.get(f"{board.url}/train").text


def test_yaml_round_trip_and_problems(board):  # noqa: F811
    text = httpx.post(f"{board.url}/api/yaml", json={"lora_rank": 16, "template": None}).json()["yaml"]
    assert text.strip() == "lora_rank: 16"
    parsed = httpx.post(f"{board.url}/api/parse-yaml", json={"yaml": "lora_rank: 16\nstage: dpo"})
    assert parsed.json()["config"]["lora_rank"] == 16 and parsed.json()["config"]["stage"] == "dpo"
    bad = httpx.post(f"{board.url}/api/parse-yaml", json={"yaml": "lora_rnak: 16"})
    assert bad.status_code == 422 and "lora_rank" in bad.json()["problems"][0]


def test_runs_page_escapes_what_users_typed(board, tiny_model_dir):  # noqa: F811
    hostile = "<script>alert(1)</script>"
    config = run_config(tiny_model_dir, board.tmp / hostile, dataset="nope", max_steps=1)
    run_id = httpx.post(f"{board.url}/api/runs", json=config).json()["id"]
    html = httpx.get(f"{board.url}/runs").text
    assert run_id in html and hostile not in html and "&lt;script&gt;" in html
    assert json.dumps(run_id) in httpx.get(f"{board.url}/runs/{run_id}").text


def test_a_token_guards_pages_and_api(tmp_path):
    registry = RunRegistry(tmp_path / "runs.sqlite")
    launcher = Launcher(registry, tmp_path / "runs", poll_s=0.2)
    try:
        with Server(create_board_app(registry, launcher, [tmp_path], token="s3cret")) as server:
            assert httpx.get(f"{server.url}/train").status_code == 401
            assert httpx.get(f"{server.url}/api/runs").status_code == 401
            assert (
                httpx.get(f"{server.url}/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code
                == 200
            )
            assert httpx.get(f"{server.url}/train", cookies={"tuneforge_token": "s3cret"}).status_code == 200
    finally:
        launcher.close()
