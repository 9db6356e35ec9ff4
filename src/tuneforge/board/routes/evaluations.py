"""The Evaluate page: a benchmark run on a finished run's model (or a base model and adapters) as a registered
`tuneforge eval` job, optionally next to the base model, and its results table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from tuneforge.board.requests import body_object
from tuneforge.board.routes.exports import config_from_run, exportable_runs
from tuneforge.board.state import board_state

router = APIRouter()
TASKS = ("mmlu_test", "mmlu_validation", "ceval_validation", "cmmlu_test")


@router.get("/evaluate")
async def evaluate_page(request: Request) -> HTMLResponse:
    board = board_state(request)
    return board.page(request, "evaluate.html", runs=exportable_runs(board), tasks=TASKS)


@router.post("/api/evaluations", status_code=201)
async def create_evaluation(request: Request) -> Any:
    """Start `tuneforge eval` of a form's config; task_dir and save_dir stay inside the board's roots."""
    board = board_state(request)
    flat = config_from_run(board, await body_object(request))
    missing = [] if flat.get("save_dir") else ["key 'save_dir': say where to write the results"]
    missing += [] if flat.get("task") else ["key 'task': pick a benchmark"]
    cfg = board.checked_config(flat, missing)
    keys = {k: v for k, v in cfg.to_flat().items() if k in flat or k in type(cfg.eval).model_fields}
    run_id = board.launcher.submit(keys, command="eval")
    return board.registry.get(run_id).as_dict()


@router.get("/api/runs/{run_id}/results")
async def results(request: Request, run_id: str) -> Any:
    """results.json of a finished evaluation."""
    run = board_state(request).run_or_404(run_id)
    path = Path(run.output_dir) / "results.json"
    if run.command != "eval" or run.status != "done" or not path.is_file():
        raise HTTPException(409, f"run {run_id} is not a finished evaluation")
    return json.loads(path.read_text(encoding="utf-8"))
