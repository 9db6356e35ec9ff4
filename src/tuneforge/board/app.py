"""The board: a FastAPI app of small routers (`board/routes/`) over the run registry.

Configs posted as JSON are validated by the same schema as YAML files (422 lists every problem);
paths in them must stay inside the allowed roots; runs start through `Launcher` as argument lists.
Cross-site writes, foreign Host headers and oversized bodies are refused by `BoardGuard`; a token, when
set, is required on every route but the login page and static files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from tuneforge.board.chat import ChatEngines
from tuneforge.board.guard import BoardGuard
from tuneforge.board.launcher import Launcher
from tuneforge.board.preview import DatasetPreviews
from tuneforge.board.requests import Problems
from tuneforge.board.routes import chat, editor, evaluations, exports, pages, runs, synth
from tuneforge.board.state import HERE, BoardState, templates
from tuneforge.runs.registry import RunRegistry


def create_board_app(
    registry: RunRegistry,
    launcher: Launcher,
    roots: list[Path],
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    reward_dirs: Iterable[Path] = (),
) -> FastAPI:
    app = FastAPI(title="tuneforge board", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BoardGuard, allowed_hosts=allowed_hosts)
    roots = [Path(r).resolve() for r in roots]
    chats = ChatEngines(registry, roots)
    board = BoardState(
        registry=registry,
        launcher=launcher,
        roots=roots,
        reward_dirs=[Path(d).resolve() for d in reward_dirs],
        token=token,
        chats=chats,
        previews=DatasetPreviews(roots, chats.check_model),
        pages=templates(),
    )
    app.state.board = board
    app.state.chats = chats  # closed by `tuneforge board` on shutdown

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if token and path != "/login" and not path.startswith("/static/"):
            header = request.headers.get("authorization", "")
            bearer = header[7:] if header.lower().startswith("bearer ") else None
            given = bearer if bearer is not None else request.cookies.get(pages.TOKEN_COOKIE, "")
            if not board.token_ok(given):
                if path.startswith("/api/") or request.method != "GET":
                    return JSONResponse({"detail": "a valid token is required"}, status_code=401)
                return RedirectResponse(f"/login?{urlencode({'next': path})}", status_code=303)
        return await call_next(request)

    @app.exception_handler(Problems)
    async def problems(request: Request, err: Problems) -> JSONResponse:
        return JSONResponse({"problems": err.problems}, status_code=422)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (pages, runs, editor, chat, exports, evaluations, synth):
        app.include_router(module.router)
    return app
