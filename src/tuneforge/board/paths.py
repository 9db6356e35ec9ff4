"""Paths typed into the board's forms may only point inside the folders the board was allowed.

Every key that names a place on disk is checked (a key that may also name a zoo model or a hub id is
checked when its value is a path), the files a dataset_info.json entry names too, and rewards given as
`module:function` (which would import code) are refused from the board.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PATH_KEYS = ("output_dir", "dataset_dir")


def inside_roots(path: str, roots: list[Path]) -> bool:
    """Whether `path` (after resolving links and ..) is one of `roots` or below one."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


# keys whose value may instead be a zoo name, a hub id or a keyword: checked when it is a path
MAYBE_PATH_KEYS = (
    "model_name_or_path",
    "adapter_name_or_path",
    "ref_model",
    "reward_model",
    "resume_from_checkpoint",
)
ALWAYS_PATH_KEYS = ("cache_dir",)


def looks_like_path(value: str) -> bool:
    """A value that names a place on disk: absolute, relative with ./ ../ ~, or existing here."""
    return value.startswith(("/", ".", "~")) or Path(value).expanduser().exists()


def _values(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")] if "," in value else [value]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def check_paths(flat: dict[str, Any], roots: list[Path], keys: tuple[str, ...] = PATH_KEYS) -> list[str]:
    """Problems with path keys that point outside every allowed root."""
    problems = []
    shown = ", ".join(str(r) for r in roots)
    for key in keys:
        value = flat.get(key)
        if value is None:
            continue
        if not inside_roots(str(value), roots):
            problems.append(f"key '{key}': {value} is outside the folders this board may use ({shown})")
    if keys != PATH_KEYS:
        return problems
    for key in (*MAYBE_PATH_KEYS, *ALWAYS_PATH_KEYS):
        for value in _values(flat.get(key)):
            if value in ("auto", "no", "none", "") or (key in MAYBE_PATH_KEYS and not looks_like_path(value)):
                continue
            if not inside_roots(value, roots):
                problems.append(f"key '{key}': {value} is outside the folders this board may use ({shown})")
    problems += _dataset_file_problems(flat, roots, shown)
    for reward in _values(flat.get("reward_funcs")):
        if ":" in reward:
            problems.append(
                f"key 'reward_funcs': {reward} would import Python code; the board runs only the built-in rewards "
                "(start runs with module:function rewards from the command line)"
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
