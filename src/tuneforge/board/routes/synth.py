"""The Data page: `tuneforge synth` jobs started from a form (registered like every run), and their rows and
report, readable while the job still writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from tuneforge.board.requests import body_object
from tuneforge.board.state import board_state

router = APIRouter()
MAX_ROWS = 200


def _rows_file(run: Any) -> Path:
    return Path(run.output_dir) / f"{run.config.get('synth_dataset_name') or 'synth'}.jsonl"


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.endswith(b"\n"))


@router.get("/data")
async def data_page(request: Request) -> HTMLResponse:
    from tuneforge.config.help import SYNTH_SECTIONS, form_sections

    board = board_state(request)
    jobs = [
        {
            **run.as_dict(),
            "mode": run.config.get("synth_mode", "instruct"),
            "rows": _count_lines(_rows_file(run)),
        }
        for run in board.registry.list()
        if run.command == "synth"
    ]
    return board.page(request, "data.html", sections=form_sections(SYNTH_SECTIONS), jobs=jobs)


@router.post("/api/synth", status_code=201)
async def create_synth(request: Request) -> Any:
    """Start `tuneforge synth` of a form's config; its files stay inside the board's roots (422 otherwise)."""
    board = board_state(request)
    flat = {k: v for k, v in (await body_object(request)).items() if v not in (None, "")}
    problems = []
    if flat.get("synth_api_key"):
        problems.append("key 'synth_api_key': the board does not store API keys; set the variable synth_api_key_env "
                        "names in the board's environment")  # fmt: skip
    if flat.get("synth_mode", "instruct") != "instruct" and not flat.get("synth_source_file"):
        problems.append(
            "key 'synth_source_file': answer and preference modes need the instructions to answer"
        )
    cfg = board.checked_config(flat, problems)
    keys = {k: v for k, v in cfg.to_flat().items() if k in flat or k in type(cfg.synth).model_fields}
    run_id = board.launcher.submit(keys, command="synth")
    return board.registry.get(run_id).as_dict()


@router.get("/api/runs/{run_id}/rows")
async def synth_rows(request: Request, run_id: str, offset: int = 0, limit: int = 50) -> Any:
    """Rows `offset`.. of a synth job (at most 200), how many there are, and its report once written."""
    run = board_state(request).run_or_404(run_id)
    if run.command != "synth":
        raise HTTPException(409, f"run {run_id} is not a synthetic data job")
    offset, limit = max(offset, 0), min(max(limit, 1), MAX_ROWS)
    path, rows, total = _rows_file(run), [], 0
    if path.is_file():
        with path.open("rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):  # being written right now
                    break
                if offset <= total < offset + limit:
                    rows.append(json.loads(line))
                total += 1
    report_path = Path(run.output_dir) / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    return {"offset": offset, "total": total, "rows": rows, "report": report}


@router.get("/api/runs/{run_id}/report.png")
async def synth_report_png(request: Request, run_id: str) -> FileResponse:
    run = board_state(request).run_or_404(run_id)
    path = Path(run.output_dir) / "report.png"
    if run.command != "synth" or not path.is_file():
        raise HTTPException(404, f"run {run_id} has no synthetic data report yet")
    return FileResponse(path, media_type="image/png")
