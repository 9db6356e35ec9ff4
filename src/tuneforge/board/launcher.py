"""Starting, watching and stopping `tuneforge train` (and `tuneforge export`) processes for the board.

A run is started as `python -m tuneforge.cli.main train CONFIG.yaml` with an argument list (never
a shell string): whatever a form field holds ends up as YAML data in CONFIG.yaml, never as code.
At most `max_concurrent` runs train at once; the rest wait as `queued` and start when a slot frees.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tuneforge.runs.registry import RUN_ID_ENV, RUNS_DB_ENV, RunRegistry, runs_in
from tuneforge.utils.log import get_logger

board_log = get_logger("tuneforge.board")
COMMANDS = ("train", "export", "eval", "synth")


class Launcher:
    def __init__(self, registry: RunRegistry, runs_dir: Path, max_concurrent: int = 1, poll_s: float = 0.5):
        self.registry = registry
        self.runs_dir = runs_dir
        self.max_concurrent = max_concurrent
        self.children: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(poll_s,), name="tuneforge-board-launcher", daemon=True
        )
        self._thread.start()

    def submit(self, config: dict[str, Any], command: str = "train") -> str:
        """Register a `tuneforge train` (or `export`) of `config` as queued and start it when a slot is free."""
        run = self.registry.create(config, status="queued", command=command)
        self.schedule()
        return run.id

    def resume(self, run_id: str) -> None:
        """Queue a finished, failed or stopped run again (it resumes from its newest checkpoint)."""
        self.registry.update(run_id, status="queued", ended=None, exit_code=None, reason=None)
        self.schedule()

    def stop(self, run_id: str) -> None:
        """SIGTERM: the run writes a checkpoint after its current step and exits as `stopped`."""
        run = self.registry.get(run_id)
        if run.status == "queued":
            self.registry.finished(run_id, "stopped", None, "stopped before it started")
        elif run.status == "running" and run.pid:
            if not runs_in(run):  # gone, or its pid now belongs to another process: never signal that one
                self.registry.reconcile()
                return
            with contextlib.suppress(ProcessLookupError):  # already gone: the watcher marks it
                os.kill(run.pid, signal.SIGTERM)

    def schedule(self) -> None:
        """Start queued runs while there are free slots (oldest first)."""
        with self._lock:
            runs = self.registry.list()
            running = sum(r.status == "running" for r in runs)
            for run in sorted((r for r in runs if r.status == "queued"), key=lambda r: r.created):
                if running >= self.max_concurrent:
                    break
                self._start(run.id, run.config, run.command)
                running += 1

    def _start(self, run_id: str, config: dict[str, Any], command: str = "train") -> None:
        if command not in COMMANDS:  # the registry is a file: never run what it names unless it is ours
            self.registry.finished(run_id, "failed", None, f"unknown command {command!r}")
            return
        folder = self.runs_dir / run_id
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        log_path = folder / f"{command}.log"
        env = {
            **os.environ,
            RUN_ID_ENV: run_id,
            RUNS_DB_ENV: str(self.registry.path),
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "tuneforge.cli.main", command, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the board's terminal does not reach the runs
            )
        self.children[run_id] = child
        self.registry.started(run_id, child.pid, str(log_path))

    def _watch(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            for run_id, child in list(self.children.items()):
                if child.poll() is not None:  # reaped, so a dead run is seen as dead
                    del self.children[run_id]
            try:
                self.schedule()
            except Exception as err:  # keep watching; the next poll tries again
                board_log.info(f"scheduling failed: {err}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
