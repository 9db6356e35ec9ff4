"""The board's Evaluate page: a benchmark on a finished run's adapter, next to its base, as a registered job
whose results the run page shows; folders outside the roots refused."""

from __future__ import annotations

from tests.board.test_api import board, httpx, wait_status  # noqa: F401 - the fixture
from tests.board.test_exports import finished_run
from tests.eval.test_eval import FIXTURES


def test_a_finished_run_is_evaluated_next_to_its_base_from_the_board(board, tiny_model_dir):  # noqa: F811
    run_id = finished_run(board, tiny_model_dir)
    page = httpx.get(f"{board.url}/evaluate").text
    assert f'<option value="{run_id}">' in page and "cmmlu_test" in page
    body = {"run": run_id, "task": "mmlu_test", "task_dir": str(FIXTURES), "n_shot": 1, "compare_base": True,
            "save_dir": str(board.tmp / "eval")}  # fmt: skip
    created = httpx.post(f"{board.url}/api/evaluations", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["command"] == "eval" and job["output_dir"] == str(board.tmp / "eval")
    done = wait_status(board.url, job["id"], {"done", "failed"}, timeout=120)
    assert done["status"] == "done", done
    report = httpx.get(f"{board.url}/api/runs/{job['id']}/results").json()
    assert set(report["results"]) == {"tuned", "base"} and report["results"]["tuned"]["n"] == 20
    assert "eval-results" in httpx.get(f"{board.url}/runs/{job['id']}").text
    assert httpx.get(f"{board.url}/api/runs/{run_id}/results").status_code == 409  # a training run


def test_evaluations_outside_the_roots_or_without_a_results_folder_are_refused(board, tiny_model_dir):  # noqa: F811
    run_id = finished_run(board, tiny_model_dir)
    outside = httpx.post(
        f"{board.url}/api/evaluations",
        json={"run": run_id, "task": "mmlu_test", "task_dir": "/etc", "save_dir": str(board.tmp / "e")},
    )
    assert outside.status_code == 422 and any(
        "task_dir" in p and "outside" in p for p in outside.json()["problems"]
    )
    missing = httpx.post(f"{board.url}/api/evaluations", json={"run": run_id, "task": "mmlu_test"})
    assert missing.status_code == 422 and "save_dir" in missing.text
