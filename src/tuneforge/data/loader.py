"""Read the datasets a config names (via dataset_info.json) into `Conversation`s, with file:line on every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.config import DataArguments
from tuneforge.data.conversation import Conversation, DataError
from tuneforge.data.formats import DatasetSpec

INFO_FILE = "dataset_info.json"


def read_dataset_info(dataset_dir: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(dataset_dir) / INFO_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; set dataset_dir to the folder that holds {INFO_FILE}")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object mapping dataset names to entries")
    return info


def dataset_spec(name: str, dataset_dir: str | Path) -> DatasetSpec:
    info = read_dataset_info(dataset_dir)
    if name not in info:
        known = ", ".join(sorted(info)) or "(none)"
        raise DataError(
            f"dataset '{name}' is not defined in {Path(dataset_dir) / INFO_FILE}; known datasets: {known}"
        )
    return DatasetSpec(name, info[name])


def iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, row) for a .json array or a .jsonl file."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte offset {err.start}); re-encode the file as UTF-8") from None
    if path.suffix == ".jsonl" or not text.lstrip().startswith("["):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}:{err.colno}: invalid JSON ({err.msg})") from None
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg})") from None
    for index, row in enumerate(rows):
        yield index + 1, row


def load_conversations(args: DataArguments) -> list[Conversation]:
    """Every conversation of every dataset in `args.dataset`, in order, `max_samples` per dataset."""
    if not args.dataset:
        raise DataError("no dataset given; set `dataset:` to a name from dataset_info.json")
    conversations: list[Conversation] = []
    for name in args.dataset:
        spec = dataset_spec(name, args.dataset_dir)
        if not spec.file_name:
            raise DataError(f"dataset '{name}' has no file_name in {INFO_FILE}")
        path = Path(args.dataset_dir) / spec.file_name
        is_array = path.suffix != ".jsonl"
        for count, (lineno, row) in enumerate(iter_rows(path)):
            if args.max_samples is not None and count >= args.max_samples:
                break
            source = f"{path}:{'row ' if is_array else ''}{lineno}"
            conversations.append(spec.convert(row, source))
    if not conversations:
        raise DataError(f"datasets {', '.join(args.dataset)} contain no rows")
    return conversations
