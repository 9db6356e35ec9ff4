"""`tuneforge board`: the run registry's JSON API on 127.0.0.1 (the pages are not built yet)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.board.app import create_board_app
from tuneforge.board.launcher import Launcher
from tuneforge.runs.registry import RunRegistry
from tuneforge.utils.log import get_logger
from tuneforge.utils.paths import tuneforge_home

board_log = get_logger("tuneforge.board")


def run_board(
    host: str,
    port: int,
    token: str | None,
    max_concurrent: int,
    roots: list[Path],
    allowed_hosts: list[str] = (),
    reward_dirs: list[Path] = (),
) -> int:
    import uvicorn

    registry = RunRegistry()
    launcher = Launcher(registry, tuneforge_home() / "board-runs", max_concurrent=max_concurrent)
    app = create_board_app(registry, launcher, roots, token, [host, *allowed_hosts], reward_dirs)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        board_log.warning(f"the board on {host} without --token lets anyone start runs")
    board_log.info(f"http://{host}:{port}/api/runs (runs in {registry.path})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        launcher.close()
        app.state.chats.close()
    return 0
