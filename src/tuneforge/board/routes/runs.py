"""The run registry's API: create, list, watch (metrics, server-sent events), stop and resume runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from tuneforge.board.requests import body_object
from tuneforge.board.state import board_state
from tuneforge.runs.metrics import read_lines, read_records
from tuneforge.runs.registry import RunRegistry

FINAL = ("done", "failed", "stopped")
router = APIRouter(prefix="/api/runs")


@router.get("")
async def list_runs(request: Request) -> list[dict[str, Any]]:
    return [run.as_dict() for run in board_state(request).registry.list()]


@router.post("", status_code=201)
async def create_run(request: Request) -> Any:
    """A flat config as JSON, validated by the same schema as YAML; paths stay inside the board's roots."""
    board = board_state(request)
    cfg = board.checked_config(await body_object(request))
    run_id = board.launcher.submit(cfg.to_flat())
    return board.registry.get(run_id).as_dict()


@router.get("/{run_id}")
async def get_run(request: Request, run_id: str) -> dict[str, Any]:
    board = board_state(request)
    board.registry.reconcile()
    return board.run_or_404(run_id).as_dict()


@router.post("/{run_id}/stop")
async def stop_run(request: Request, run_id: str) -> dict[str, Any]:
    board = board_state(request)
    board.run_or_404(run_id)
    board.launcher.stop(run_id)
    return board.registry.get(run_id).as_dict()


@router.post("/{run_id}/resume")
async def resume_run(request: Request, run_id: str) -> dict[str, Any]:
    board = board_state(request)
    run = board.run_or_404(run_id)
    if run.status in ("queued", "running"):
        raise HTTPException(409, f"run {run_id} is {run.status}")
    if run.status == "done":
        raise HTTPException(
            409,
            f"run {run_id} is finished and its model is in {run.output_dir}; resuming would change it. "
            "Start a new run (or one with a larger max_steps) to train more",
        )
    board.launcher.resume(run_id)
    return board.registry.get(run_id).as_dict()


@router.get("/{run_id}/metrics")
async def metrics(request: Request, run_id: str) -> list[dict[str, Any]]:
    run = board_state(request).run_or_404(run_id)
    records, _ = read_records(Path(run.output_dir) / "metrics.jsonl")
    return records


@router.get("/{run_id}/samples")
async def samples(request: Request, run_id: str, last: int = 1) -> list[dict[str, Any]]:
    """The last `last` logging steps of samples.jsonl: answers the policy sampled (grpo, ppo, online_dpo)."""
    run = board_state(request).run_or_404(run_id)
    records, _ = read_records(Path(run.output_dir) / "samples.jsonl")
    return records[-min(max(last, 1), 50) :]


@router.get("/{run_id}/events")
async def events(request: Request, run_id: str, poll: float = 0.2) -> StreamingResponse:
    board = board_state(request)
    poll = min(max(poll, 0.1), 10.0)  # poll=0 would spin a core
    board.run_or_404(run_id)
    return StreamingResponse(run_events(board.registry, run_id, poll), media_type="text/event-stream")


async def run_events(registry: RunRegistry, run_id: str, poll: float) -> AsyncIterator[str]:
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
            status = {"status": run.status, "exit_code": run.exit_code, "reason": run.reason}
            yield f"event: status\ndata: {json.dumps(status)}\n\n"
        if run.status in FINAL:
            return
        await asyncio.sleep(poll)
