"""Paths typed into the board's forms may only point inside the folders the board was allowed.

Every key that names a place on disk is checked (a key that may also name a zoo model or a hub id is
checked when its value is a path), the files a dataset_info.json entry names too. Rewards written as code
run only from files inside the folders given with --reward_dir.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tuneforge.config.schema import path_keys


def inside_roots(path: str, roots: list[Path]) -> bool:
    """Whether `path` (after resolving links and ..) is one of `roots` or below one."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


def looks_like_path(value: str) -> bool:
    """A value that names a place on disk: absolute, relative with ./ ../ ~, or existing here."""
    return value.startswith(("/", ".", "~")) or Path(value).expanduser().exists()


def _values(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")] if "," in value else [value]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def check_paths(
    flat: dict[str, Any], roots: list[Path], keys: Iterable[str] | None = None, reward_dirs: list[Path] = ()
) -> list[str]:
    """Problems with path-like keys (the schema marks them, see `path_keys`) that point outside every
    allowed root, with dataset files outside them, and with rewards that would import code from
    anywhere but `reward_dirs`. `keys` limits the check to those keys."""
    shown = ", ".join(str(r) for r in roots)
    kinds = path_keys()
    problems = []
    for key in kinds if keys is None else keys:
        for value in _values(flat.get(key)):
            if value in ("auto", "no", "none", "") or (kinds[key] == "maybe" and not looks_like_path(value)):
                continue
            if not inside_roots(value, roots):
                problems.append(f"key '{key}': {value} is outside the folders this board may use ({shown})")
    if keys is not None:
        return problems
    problems += _dataset_file_problems(flat, roots, shown)
    return problems + _reward_problems(flat, list(reward_dirs))


def _reward_problems(flat: dict[str, Any], reward_dirs: list[Path]) -> list[str]:
    """A reward written as code runs only from a file inside a folder the board was started with
    (--reward_dir); dotted module names are refused, as they could import anything on sys.path."""
    problems = []
    for reward in _values(flat.get("reward_funcs")):
        if ":" not in reward:
            continue
        target = reward.rpartition(":")[0]
        if target.endswith(".py") and reward_dirs and inside_roots(target, reward_dirs):
            continue
        where = (
            f"files inside {', '.join(str(d) for d in reward_dirs)} (path/to/file.py:function)"
            if reward_dirs
            else "none: start the board with --reward_dir FOLDER to allow reward files from that folder"
        )
        problems.append(
            f"key 'reward_funcs': {reward} would import Python code; the board runs the built-in rewards and "
            f"reward files from the folders it was allowed ({where})"
        )
    return problems


def _dataset_file_problems(flat: dict[str, Any], roots: list[Path], shown: str) -> list[str]:
    """Files named by the dataset_info.json entries a run uses, which must stay inside the roots too."""
    import json

    dataset_dir = Path(str(flat.get("dataset_dir") or "data"))
    info_path = dataset_dir / "dataset_info.json"
    if not inside_roots(str(dataset_dir), roots) or not info_path.is_file():
        return []  # the dataset_dir check (or the run's own data check) says what is wrong
    try:
        info = json.loads(info_path.read_text(encoding="utf-8-sig"))
    except (ValueError, OSError, RecursionError):
        return []
    problems = []
    for name in _values(flat.get("dataset")):
        entry = info.get(name) if isinstance(info, dict) else None
        names = entry.get("file_name") if isinstance(entry, dict) else None
        for file_name in _values(names):
            if not inside_roots(str(dataset_dir / file_name), roots):
                problems.append(
                    f"dataset '{name}': its file {file_name} is outside the folders this board may use ({shown})"
                )
    return problems
