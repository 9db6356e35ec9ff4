"""The Export page: a finished run (or a base model and adapter folders) written out by `tuneforge export` as
a registered job, and the files of a finished export to download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from tuneforge.board.requests import body_object
from tuneforge.board.state import BoardState, board_state

router = APIRouter()
GGUF_TYPES = ("f16", "f32", "bf16", "q8_0", "q4_0", "q4_1")


def formats() -> list[str]:
    """The registered export formats, the default first."""
    from tuneforge.export import EXPORT_FORMATS

    return sorted(EXPORT_FORMATS.members(), key=lambda name: (name != "safetensors", name))


def exportable_runs(board: BoardState) -> list[dict[str, Any]]:
    """Finished training runs whose output is an adapter or a whole model."""
    out = []
    for run in board.registry.list():
        folder = Path(run.output_dir)
        if run.command != "train" or run.status != "done":
            continue
        if (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
            out.append(
                {"id": run.id, "name": run.name, "model": str(run.config.get("model_name_or_path", ""))}
            )
    return out


def config_from_run(board: BoardState, body: dict[str, Any]) -> dict[str, Any]:
    """The flat config of an export or evaluate form: a run id becomes its base model, adapter and template."""
    flat = {k: v for k, v in body.items() if k != "run" and v not in (None, "")}
    run_id = body.get("run")
    if run_id:
        run = board.run_or_404(str(run_id))
        folder = Path(run.output_dir)
        if (folder / "adapter_config.json").is_file():
            flat.setdefault("model_name_or_path", run.config.get("model_name_or_path"))
            flat.setdefault("adapter_name_or_path", [str(folder)])
        else:
            flat.setdefault("model_name_or_path", str(folder))
        for key in ("template", "default_system", "enable_thinking", "tool_format"):
            if run.config.get(key) is not None:
                flat.setdefault(key, run.config[key])
    return flat


@router.get("/export")
async def export_page(request: Request) -> HTMLResponse:
    board = board_state(request)
    return board.page(
        request, "export.html", runs=exportable_runs(board), formats=formats(), gguf_types=GGUF_TYPES
    )


@router.post("/api/exports", status_code=201)
async def create_export(request: Request) -> Any:
    """Start `tuneforge export` of a form's config; paths stay inside the board's roots (422 otherwise)."""
    board = board_state(request)
    flat = config_from_run(board, await body_object(request))
    missing = [] if flat.get("export_dir") else ["key 'export_dir': say where to write the export"]
    cfg = board.checked_config(flat, missing)
    exported = {k: v for k, v in cfg.to_flat().items() if k in flat or k.startswith("export_")}
    run_id = board.launcher.submit(exported, command="export")
    return board.registry.get(run_id).as_dict()


def _export_folder(board: BoardState, run_id: str) -> Path:
    run = board.run_or_404(run_id)
    if run.command != "export" or run.status != "done":
        raise HTTPException(409, f"run {run_id} is not a finished export")
    return Path(run.output_dir)


@router.get("/api/runs/{run_id}/files")
async def export_files(request: Request, run_id: str) -> list[dict[str, Any]]:
    folder = _export_folder(board_state(request), run_id)
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.iterdir()) if p.is_file()]


@router.get("/api/runs/{run_id}/files/{name}")
async def export_file(request: Request, run_id: str, name: str) -> FileResponse:
    folder = _export_folder(board_state(request), run_id)
    path = folder / name
    if (
        "/" in name
        or "\\" in name
        or name.startswith(".")
        or not path.is_file()
        or path.resolve().parent != folder.resolve()
    ):
        raise HTTPException(404, f"no file {name} in this export")
    return FileResponse(path, filename=name)
