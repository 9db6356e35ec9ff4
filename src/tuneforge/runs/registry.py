"""Every training run in one SQLite file under TUNEFORGE_HOME: config, status, process, times, output.

Both `tuneforge train` (started in a terminal or by the board) and the board write here, so a run
started anywhere shows up everywhere, and nothing is lost when the board restarts. WAL mode and a
busy timeout let several processes write at once. A run whose process died without saying so is
marked failed, with the last lines of its log, the next time anyone lists the runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.utils.paths import tuneforge_home

STATUSES = ("queued", "running", "done", "failed", "stopped")
RUN_ID_ENV = "TUNEFORGE_RUN_ID"  # set by the board for the `tuneforge train` it starts

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    pid INTEGER,
    log_path TEXT,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    reason TEXT,
    command TEXT NOT NULL DEFAULT 'train'
)
"""


@dataclass
class Run:
    id: str
    name: str
    status: str
    config: dict[str, Any]
    output_dir: str
    pid: int | None
    log_path: str | None
    created: float
    started: float | None
    ended: float | None
    exit_code: int | None
    reason: str | None
    command: str = "train"  # the tuneforge command the run is: train, export or eval

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


RUNS_DB_ENV = "TUNEFORGE_RUNS_DB"  # another registry file (the board passes its own to the runs it starts)


def default_path() -> Path:
    return Path(os.environ.get(RUNS_DB_ENV) or tuneforge_home() / "runs.sqlite")


class RunRegistry:
    def __init__(self, path: Path | None = None):
        self.path = Path(path or default_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            if "command" not in columns:  # a registry written before exports were runs too
                db.execute("ALTER TABLE runs ADD COLUMN command TEXT NOT NULL DEFAULT 'train'")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def create(
        self, config: dict[str, Any], status: str = "queued", name: str | None = None, command: str = "train"
    ) -> Run:
        run_id = uuid.uuid4().hex[:12]
        where = {"export": "export_dir", "eval": "save_dir", "synth": "synth_output_dir"}.get(
            command, "output_dir"
        )
        output_dir = str(config.get(where, "") or "")
        name = name or Path(output_dir).name or run_id
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, name, status, config, output_dir, created, command) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, status, json.dumps(config), output_dir, time.time(), command),
            )
        return self.get(run_id)

    def update(self, run_id: str, **fields: Any) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']}")
        if "config" in fields:
            fields["config"] = json.dumps(fields["config"])
        columns = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*fields.values(), run_id))  # noqa: S608 - fixed names

    def get(self, run_id: str) -> Run:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return _run(row)

    def list(self) -> list[Run]:
        self.reconcile()
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [_run(r) for r in rows]

    def started(self, run_id: str, pid: int, log_path: str | None = None) -> None:
        self.update(
            run_id,
            status="running",
            pid=pid,
            started=time.time(),
            **({"log_path": log_path} if log_path else {}),
        )

    def finished(self, run_id: str, status: str, exit_code: int | None, reason: str | None = None) -> None:
        self.update(run_id, status=status, exit_code=exit_code, ended=time.time(), reason=reason)

    def reconcile(self) -> list[str]:
        """Mark running runs whose process is gone as failed (with their last log lines); returns their ids."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs WHERE status = 'running'").fetchall()
        dead = []
        for row in rows:
            run = _run(row)
            if run.pid is not None and not runs_in(run):
                tail = last_lines(run.log_path)
                reason = "the training process ended without reporting (killed?)" + (
                    f"; last log lines:\n{tail}" if tail else ""
                )
                self.finished(run.id, "failed", None, reason)
                dead.append(run.id)
        return dead


def _run(row: sqlite3.Row) -> Run:
    data = dict(row)
    data["config"] = json.loads(data["config"])
    return Run(**data)


def runs_in(run: Run) -> bool:
    """True while the run's recorded pid is alive and is still the run's own process: a pid reused by a
    process started after the run was registered is not it (its start time gives it away)."""
    if run.pid is None or not process_alive(run.pid):
        return False
    if run.started is None:
        return True
    try:
        import psutil

        return psutil.Process(run.pid).create_time() <= run.started + 1.0
    except Exception:  # psutil missing or the process just ended: trust the liveness check
        return True


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def last_lines(path: str | None, count: int = 20) -> str:
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 16384))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-count:])
