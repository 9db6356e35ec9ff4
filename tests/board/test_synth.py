"""The board's Data page: a `tuneforge synth` job started from the form against a teacher endpoint, its rows
browsed while and after it writes them, stopped with the rows kept; API keys and outside folders refused."""

from __future__ import annotations

import json
import time

from tests.board.test_api import board, httpx, wait_status  # noqa: F401 - the fixture
from tests.synth.teacher_server import Reply, TeacherServer
from tests.synth.test_synth import many_tasks


def test_a_synth_job_from_the_data_page_writes_rows_the_run_page_browses(board):  # noqa: F811
    source = board.tmp / "questions.jsonl"
    source.write_text("".join(json.dumps({"instruction": f"Spell the number {i}."}) + "\n" for i in range(7)))
    assert 'name="synth_base_url"' in httpx.get(f"{board.url}/data").text
    with TeacherServer(default=lambda prompt: Reply(f"answer: {prompt.upper()}")) as teacher:
        body = {"synth_mode": "answer", "synth_base_url": teacher.url, "synth_source_file": str(source),
                "synth_output_dir": str(board.tmp / "answers"), "synth_dataset_name": "spelled"}  # fmt: skip
        created = httpx.post(f"{board.url}/api/synth", json=body)
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["command"] == "synth" and job["output_dir"] == str(board.tmp / "answers")
        done = wait_status(board.url, job["id"], {"done", "failed"}, timeout=60)
    assert done["status"] == "done", done
    rows = f"{board.url}/api/runs/{job['id']}/rows"
    first, rest = httpx.get(rows, params={"limit": 5}).json(), httpx.get(rows, params={"offset": 5}).json()
    assert first["total"] == rest["total"] == 7 and (len(first["rows"]), len(rest["rows"])) == (5, 2)
    answered = {r["instruction"]: r["output"] for r in first["rows"] + rest["rows"]}  # in the order answered
    assert answered == {f"Spell the number {i}.": f"answer: SPELL THE NUMBER {i}." for i in range(7)}
    assert rest["report"]["rows"] == 7
    assert httpx.get(f"{board.url}/api/runs/{job['id']}/report.png").headers["content-type"] == "image/png"
    listing = httpx.get(f"{board.url}/data").text
    assert f'href="/runs/{job["id"]}"' in listing and "<td>7</td>" in listing
    assert 'id="synth-rows"' in httpx.get(f"{board.url}/runs/{job['id']}").text


def test_stopping_a_synth_job_keeps_its_rows(board):  # noqa: F811
    with TeacherServer(default=many_tasks()) as teacher:
        body = {
            "synth_base_url": teacher.url,
            "synth_output_dir": str(board.tmp / "tasks"),
            "synth_num_rows": 500,
        }
        job = httpx.post(f"{board.url}/api/synth", json=body).json()
        end = time.monotonic() + 60
        while (
            time.monotonic() < end and httpx.get(f"{board.url}/api/runs/{job['id']}/rows").json()["total"] < 3
        ):
            time.sleep(0.1)
        httpx.post(f"{board.url}/api/runs/{job['id']}/stop")
        stopped = wait_status(board.url, job["id"], {"stopped", "failed", "done"}, timeout=60)
    assert stopped["status"] == "stopped", stopped
    after = httpx.get(f"{board.url}/api/runs/{job['id']}/rows").json()
    assert 3 <= after["total"] < 500 and after["report"]["rows"] == after["total"]


def test_api_keys_and_folders_outside_the_roots_are_refused(board):  # noqa: F811
    refused = httpx.post(
        f"{board.url}/api/synth",
        json={"synth_api_key": "sk-123", "synth_output_dir": "/etc/synth", "synth_mode": "answer"},
    )
    problems = refused.json()["problems"]
    assert refused.status_code == 422 and len(problems) == 3
    assert any("synth_api_key" in p for p in problems) and any("synth_source_file" in p for p in problems)
    assert any("synth_output_dir" in p and "outside" in p for p in problems)
