"""The board's JSON API: create, list, watch, stop and resume runs (pages come on top of it).

Configs posted as JSON are validated by the same schema as YAML files (422 lists every problem);
paths in them must stay inside the allowed roots; runs start through `Launcher` as argument lists.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tuneforge.board.launcher import Launcher
from tuneforge.config import ConfigError, build_config
from tuneforge.runs.metrics import read_lines, read_records
from tuneforge.runs.registry import RunRegistry

PATH_KEYS = ("output_dir", "dataset_dir")
FINAL = ("done", "failed", "stopped")


def check_paths(flat: dict[str, Any], roots: list[Path]) -> list[str]:
    """Problems with path keys that point outside every allowed root."""
    problems = []
    for key in PATH_KEYS:
        value = flat.get(key)
        if value is None:
            continue
        resolved = Path(str(value)).expanduser().resolve()
        if not any(resolved == root or root in resolved.parents for root in roots):
            shown = ", ".join(str(r) for r in roots)
            problems.append(f"key '{key}': {value} is outside the folders this board may use ({shown})")
    return problems


def create_board_app(
    registry: RunRegistry, launcher: Launcher, roots: list[Path], token: str | None = None
) -> FastAPI:
    app = FastAPI(title="tuneforge board", docs_url=None, redoc_url=None, openapi_url=None)
    roots = [Path(r).resolve() for r in roots]

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        if token:
            header = request.headers.get("authorization", "")
            given = (
                header[7:]
                if header.lower().startswith("bearer ")
                else request.cookies.get("tuneforge_token", "")
            )
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "a valid token is required"}, status_code=401)
        return await call_next(request)

    def run_or_404(run_id: str) -> Any:
        try:
            return registry.get(run_id)
        except KeyError:
            raise HTTPException(404, f"no run {run_id}") from None

    @app.get("/api/runs")
    async def list_runs() -> list[dict[str, Any]]:
        return [run.as_dict() for run in registry.list()]

    @app.post("/api/runs", status_code=201)
    async def create_run(request: Request) -> Any:
        try:
            flat = await request.json()
        except ValueError:
            return JSONResponse({"problems": ["the body is not valid JSON"]}, status_code=422)
        if not isinstance(flat, dict):
            return JSONResponse(
                {"problems": ["the body must be a JSON object of config keys"]}, status_code=422
            )
        problems = check_paths(flat, roots)
        try:
            cfg = build_config(flat)
        except ConfigError as err:
            problems = list(err.problems) + problems
        if problems:
            return JSONResponse({"problems": problems}, status_code=422)
        run_id = launcher.submit(cfg.to_flat())
        return registry.get(run_id).as_dict()

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        registry.reconcile()
        return run_or_404(run_id).as_dict()

    @app.post("/api/runs/{run_id}/stop")
    async def stop_run(run_id: str) -> dict[str, Any]:
        run_or_404(run_id)
        launcher.stop(run_id)
        return registry.get(run_id).as_dict()

    @app.post("/api/runs/{run_id}/resume")
    async def resume_run(run_id: str) -> dict[str, Any]:
        run = run_or_404(run_id)
        if run.status in ("queued", "running"):
            raise HTTPException(409, f"run {run_id} is {run.status}")
        launcher.resume(run_id)
        return registry.get(run_id).as_dict()

    @app.get("/api/runs/{run_id}/metrics")
    async def metrics(run_id: str) -> list[dict[str, Any]]:
        run = run_or_404(run_id)
        records, _ = read_records(Path(run.output_dir) / "metrics.jsonl")
        return records

    @app.get("/api/runs/{run_id}/events")
    async def events(run_id: str, poll: float = 0.2) -> StreamingResponse:
        run_or_404(run_id)
        return StreamingResponse(_events(registry, run_id, poll), media_type="text/event-stream")

    return app


async def _events(registry: RunRegistry, run_id: str, poll: float) -> AsyncIterator[str]:
    """Server-sent events: `metric` per metrics.jsonl line, `log` per log line, `status` on each change."""
    metrics_at = log_at = 0
    last_status = None
    while True:
        registry.reconcile()
        run = registry.get(run_id)
        records, metrics_at = read_records(Path(run.output_dir) / "metrics.jsonl", metrics_at)
        for record in records:
            yield f"event: metric\ndata: {json.dumps(record)}\n\n"
        if run.log_path:
            lines, log_at = read_lines(Path(run.log_path), log_at)
            for line in lines:
                yield f"event: log\ndata: {json.dumps(line)}\n\n"
        if run.status != last_status:
            last_status = run.status
            yield f"event: status\ndata: {json.dumps({'status': run.status, 'exit_code': run.exit_code, 'reason': run.reason})}\n\n"
        if run.status in FINAL:
            return
        await asyncio.sleep(poll)
