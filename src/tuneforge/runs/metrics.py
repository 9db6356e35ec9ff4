"""Reading a run's metrics.jsonl and log without importing the training stack (for the board)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_records(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines from byte `start` on, and the offset after the last complete line."""
    if not path.is_file():
        return [], start
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records, start + end


def read_lines(path: Path, start: int = 0) -> tuple[list[str], int]:
    if not path.is_file():
        return [], start
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read()
    end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
    text = data[:end].decode("utf-8", errors="replace").replace("\r", "\n")
    return [line for line in text.split("\n") if line.strip()], start + end
