"""`tuneforge train` reports itself to the run registry: running, then done, stopped or failed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tuneforge.runs.registry import RUN_ID_ENV, RunRegistry
from tuneforge.utils.log import warn

SECRET_SUFFIXES = ("_token", "_api_key")


def without_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with tokens and API keys blanked: the registry is read by the board and its API, and a key
    given on the command line must not end up there (the environment variables still work on a resume)."""
    return {k: None if k.endswith(SECRET_SUFFIXES) and v else v for k, v in config.items()}


@contextmanager
def tracked_run(config: dict[str, Any], command: str = "train") -> Iterator[str | None]:
    """Register this process's run (or take over the one the board created) for the duration of the block.

    The registry never stops a run: if it cannot be opened, training goes on with a warning.
    """
    try:
        registry = RunRegistry()
        run_id = os.environ.get(RUN_ID_ENV)
        if not run_id:
            run_id = registry.create(without_secrets(config), status="running", command=command).id
        registry.started(run_id, os.getpid())
    except Exception as err:  # a read-only home, a locked file: not a reason to lose a training run
        warn(f"the run registry is unavailable ({err}); this run is not listed")
        yield None
        return
    try:
        yield run_id
    except BaseException as err:
        code = getattr(err, "exit_code", 1)
        status = "stopped" if isinstance(code, int) and code > 128 else "done" if code == 0 else "failed"
        if isinstance(err, KeyboardInterrupt):
            status, code = "stopped", 130
        registry.finished(run_id, status, code, f"{type(err).__name__}: {err}")
        raise
    registry.finished(run_id, "done", 0)
