"""Paths typed into the board's forms may only point inside the folders the board was allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PATH_KEYS = ("output_dir", "dataset_dir")


def inside_roots(path: str, roots: list[Path]) -> bool:
    """Whether `path` (after resolving links and ..) is one of `roots` or below one."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


def check_paths(flat: dict[str, Any], roots: list[Path], keys: tuple[str, ...] = PATH_KEYS) -> list[str]:
    """Problems with path keys that point outside every allowed root."""
    problems = []
    for key in keys:
        value = flat.get(key)
        if value is None:
            continue
        if not inside_roots(str(value), roots):
            shown = ", ".join(str(r) for r in roots)
            problems.append(f"key '{key}': {value} is outside the folders this board may use ({shown})")
    return problems
