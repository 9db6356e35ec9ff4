"""What every route of the board shares: the registry, the launcher, the allowed folders, the engines."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from tuneforge.board.chat import ChatEngines
from tuneforge.board.launcher import Launcher
from tuneforge.board.preview import DatasetPreviews
from tuneforge.runs.registry import Run, RunRegistry

HERE = Path(__file__).resolve().parent
LANGUAGES = ("en", "zh")


@dataclass
class BoardState:
    registry: RunRegistry
    launcher: Launcher
    roots: list[Path]
    reward_dirs: list[Path]
    token: str | None
    chats: ChatEngines
    previews: DatasetPreviews
    pages: Any

    def token_ok(self, given: str) -> bool:
        return self.token is None or hmac.compare_digest(given.encode(), self.token.encode())

    def run_or_404(self, run_id: str) -> Run:
        try:
            return self.registry.get(run_id)
        except KeyError:
            raise HTTPException(404, f"no run {run_id}") from None

    def checked_config(self, flat: dict[str, Any], problems: list[str] | None = None) -> Any:
        """`flat` validated by the schema with every path kept inside the roots; every problem (with `problems`
        already found) answered at once as a 422."""
        from tuneforge.board.paths import check_paths
        from tuneforge.board.requests import Problems
        from tuneforge.config import ConfigError, build_config

        problems = list(problems or []) + check_paths(flat, self.roots, reward_dirs=self.reward_dirs)
        try:
            cfg = build_config(flat)
        except ConfigError as err:
            problems = list(err.problems) + problems
        if problems:
            raise Problems(problems)
        return cfg

    def page(self, request: Request, name: str, **context: Any) -> HTMLResponse:
        """A page in the language the query or the cookie asks for (English by default)."""
        lang = request.query_params.get("lang") or request.cookies.get("tuneforge_lang") or "en"
        lang = lang if lang in LANGUAGES else "en"
        html = self.pages.get_template(name).render(lang=lang, t=strings(lang), **context)
        response = HTMLResponse(html)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie("tuneforge_lang", lang, samesite="strict")
        return response


def board_state(request: Request) -> BoardState:
    return request.app.state.board


def templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def strings(lang: str) -> dict[str, str]:
    return json.loads((HERE / "locales" / f"{lang}.json").read_text(encoding="utf-8"))
