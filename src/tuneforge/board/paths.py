"""Paths typed into the board's forms may only point inside the folders the board was allowed."""

from __future__ import annotations

from pathlib import Path


def inside_roots(path: str, roots: list[Path]) -> bool:
    """Whether `path` (after resolving links and ..) is one of `roots` or below one."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in roots)
