"""The board's HTML pages and its login (server-rendered; the pages' scripts call the JSON API)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tuneforge.board.state import board_state
from tuneforge.runs.metrics import read_records

TOKEN_COOKIE = "tuneforge_token"
router = APIRouter()


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/runs")


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    next_page = local_path(request.query_params.get("next"))
    return board_state(request).page(request, "login.html", next=next_page, failed=False)


@router.post("/login")
async def login(request: Request) -> Any:
    board = board_state(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given, target = form.get("token", [""])[0], local_path(form.get("next", ["/"])[0])
    if not board.token_ok(given):
        response = board.page(request, "login.html", next=target, failed=True)
        response.status_code = 401
        return response
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
    return response


@router.get("/runs")
async def runs_page(request: Request) -> HTMLResponse:
    board = board_state(request)
    return board.page(request, "runs.html", runs=[run_summary(r) for r in board.registry.list()])


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> HTMLResponse:
    board = board_state(request)
    return board.page(request, "run.html", run=board.run_or_404(run_id))


@router.get("/train")
async def train_page(request: Request) -> HTMLResponse:
    from tuneforge.config.help import form_sections

    return board_state(request).page(request, "train.html", sections=form_sections())


@router.get("/chat")
async def chat_page(request: Request) -> HTMLResponse:
    board = board_state(request)
    return board.page(request, "chat.html", adapters=board.chats.adapters_available())


def local_path(target: str | None) -> str:
    """Where to go after logging in: a path on this board, never another site."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def run_summary(run: Any) -> dict[str, Any]:
    """A run's row on the runs page: progress (steps) and a naive ETA from the time per step so far."""
    records, _ = read_records(Path(run.output_dir) / "metrics.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    total = run.config.get("max_steps") if isinstance(run.config.get("max_steps"), int) else -1
    done = max(steps, default=0)
    progress = f"{done}/{total}" if total and total > 0 else str(done)
    eta = ""
    if run.status == "running" and run.started and done and total and total > done:
        eta = f"{(time.time() - run.started) / done * (total - done):.0f} s"
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
    return {**run.as_dict(), "progress": progress, "eta": eta, "created_text": created}
