"""Append-only JSON lines that survive a kill: every line is written whole and fsynced before the next one.

A run killed while writing leaves at most one incomplete last line; opening the file again drops it (and
only it), so a rerun continues from the last row that was written completely and never writes a row twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tuneforge.utils.errors import UserError
from tuneforge.utils.log import warn


class AppendLog:
    """The rows already in `path` (`rows`), and `append(row)` for new ones, each fsynced."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = self._read()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            whole = data.rfind(b"\n") + 1
            warn(f"{self.path}: dropped an incomplete last line (the previous run stopped while writing it)")
            with self.path.open("r+b") as fh:
                fh.truncate(whole)
            data = data[:whole]
        rows = []
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{self.path}:{number}: not a JSON object ({err.msg}); fix or delete that line, "
                    "then run again (the other rows are kept)"
                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{self.path}:{number}: expected a JSON object per line; fix or delete it")
            rows.append(row)
        return rows

    def append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        written = 0
        while written < len(data):  # os.write may write part of a large line
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self.rows.append(row)

    def close(self) -> None:
        os.close(self._fd)
