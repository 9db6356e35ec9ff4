"""The board's Export page: a finished run exported as a registered job, its files listed and downloaded;
paths outside the roots refused."""

from __future__ import annotations

import json

from tests.board.test_api import board, httpx, wait_status  # noqa: F401 - the fixture
from tests.export.test_export import random_adapter


def finished_run(board, tiny_model_dir) -> str:  # noqa: F811
    adapter = random_adapter(tiny_model_dir, board.tmp / "trained", 1)
    config = {"model_name_or_path": str(tiny_model_dir), "output_dir": str(adapter), "template": "qwen"}
    run = board.registry.create(config, status="running")
    board.registry.finished(run.id, "done", 0)
    return run.id


def test_a_finished_run_is_exported_from_the_board_and_its_files_download(board, tiny_model_dir):  # noqa: F811
    run_id = finished_run(board, tiny_model_dir)
    page = httpx.get(f"{board.url}/export").text
    assert f'<option value="{run_id}">' in page and 'name="export_gguf_type"' in page
    body = {"run": run_id, "export_format": "safetensors", "export_dir": str(board.tmp / "exported")}
    created = httpx.post(f"{board.url}/api/exports", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["command"] == "export" and job["output_dir"] == str(board.tmp / "exported")
    done = wait_status(board.url, job["id"], {"done", "failed"}, timeout=120)
    assert done["status"] == "done", done
    files = {f["name"]: f["bytes"] for f in httpx.get(f"{board.url}/api/runs/{job['id']}/files").json()}
    assert {"model.safetensors", "Modelfile", "README.md", "tokenizer.json"} <= set(files)
    modelfile = httpx.get(f"{board.url}/api/runs/{job['id']}/files/Modelfile")
    assert (
        modelfile.status_code == 200
        and modelfile.text.startswith("FROM .")
        and "<|im_start|>" in modelfile.text
    )
    assert httpx.get(f"{board.url}/api/runs/{job['id']}/files/..%2Fruns.sqlite").status_code == 404
    assert "export-files" in httpx.get(f"{board.url}/runs/{job['id']}").text
    # the run's template came along: the exported tokenizer renders ChatML
    config = json.loads(httpx.get(f"{board.url}/api/runs/{job['id']}/files/tokenizer_config.json").text)
    chat = httpx.get(f"{board.url}/api/runs/{job['id']}/files/chat_template.jinja")
    assert "<|im_start|>" in (chat.text if chat.status_code == 200 else config.get("chat_template", ""))


def test_exports_outside_the_roots_or_without_a_folder_are_refused(board, tiny_model_dir):  # noqa: F811
    run_id = finished_run(board, tiny_model_dir)
    outside = httpx.post(f"{board.url}/api/exports", json={"run": run_id, "export_dir": "/etc/exported"})
    assert outside.status_code == 422 and any(
        "export_dir" in p and "outside" in p for p in outside.json()["problems"]
    )
    missing = httpx.post(f"{board.url}/api/exports", json={"run": run_id})
    assert missing.status_code == 422 and "export_dir" in missing.text
    unknown = httpx.post(f"{board.url}/api/exports", json={"run": "nope", "export_dir": str(board.tmp / "x")})
    assert unknown.status_code == 404
    assert (
        httpx.get(f"{board.url}/api/runs/{run_id}/files").status_code == 409
    )  # a training run, not an export


def test_a_registry_written_before_exports_existed_opens_with_its_runs_as_training_runs(tmp_path):
    import sqlite3

    from tuneforge.runs.registry import SCHEMA, RunRegistry

    old = SCHEMA.replace(",\n    command TEXT NOT NULL DEFAULT 'train'", "")
    assert "command" not in old
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(old)
        db.execute(
            "INSERT INTO runs (id, name, status, config, output_dir, created) VALUES ('r1', 'old', 'done', '{}', '/x', 1)"
        )
    (run,) = RunRegistry(path).list()
    assert run.id == "r1" and run.command == "train"
