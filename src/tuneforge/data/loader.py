"""Read the datasets a config names (via dataset_info.json) into examples, with file:line on every problem.

Every bad row is collected, not just the first: `on_bad_rows: error` then stops with all of them
listed (before any weights load); `skip` drops them and reports the counts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config import DataArguments
from tuneforge.data.conversation import DataError, Example
from tuneforge.data.formats import DatasetSpec
from tuneforge.data.hub import hub_rows, remote_dataset_info
from tuneforge.data.readers import RawRow, data_files, iter_rows

INFO_FILE = "dataset_info.json"
SHOWN_PROBLEMS = 20


@dataclass
class RowProblem:
    source: str
    category: str
    message: str


@dataclass
class LoadedData:
    examples: list[Example] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    rows_read: int = 0


class BadRowsError(DataError):
    """Some rows are bad; the message lists them (the first `SHOWN_PROBLEMS`) with counts per category."""

    def __init__(self, problems: list[RowProblem], rows_read: int):
        self.problems = problems
        counts = Counter(p.category for p in problems)
        summary = ", ".join(f"{n} {c}" for c, n in counts.most_common())
        lines = [f"{len(problems)} of {rows_read} rows are bad ({summary}):"]
        lines += [f"  {p.message}" for p in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(
                f"  ... and {len(problems) - SHOWN_PROBLEMS} more (`tuneforge data validate` lists all)"
            )
        lines.append("Fix them, or set on_bad_rows: skip to train without them.")
        super().__init__("\n".join(lines), "bad_rows")


def read_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    remote = str(dataset_dir).startswith("REMOTE:")
    path = Path(remote_dataset_info(str(dataset_dir))) if remote else Path(dataset_dir) / INFO_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found; set dataset_dir to the folder that holds {INFO_FILE}", "missing_file"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg})", "invalid_json"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte offset {err.start})", "not_utf8") from None
    except RecursionError:
        raise DataError(f"{path}: the JSON is nested deeper than it can be read", "invalid_json") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object mapping dataset names to entries", "dataset_info")
    return info


def dataset_spec(name: str, dataset_dir: str | Path) -> DatasetSpec:
    info = read_dataset_info(dataset_dir)
    if name not in info:
        known = ", ".join(sorted(info)) or "(none)"
        raise DataError(
            f"dataset '{name}' is not defined in {Path(dataset_dir) / INFO_FILE}; known datasets: {known}",
            "unknown_dataset",
        )
    return DatasetSpec(name, info[name])


def dataset_rows(name: str, args: DataArguments, streaming: bool = False) -> Iterator[Example | RowProblem]:
    """One dataset's rows in file order, at most `max_samples` / `num_samples`: each good row converted, each
    bad one as a `RowProblem`. The one reader behind loading up front and streaming."""
    spec = dataset_spec(name, args.dataset_dir)
    spec.media_dir = args.media_dir or args.dataset_dir
    limit = min(x for x in (args.max_samples, spec.num_samples, float("inf")) if x is not None)
    for count, raw in enumerate(raw_rows(spec, args.dataset_dir, streaming)):
        if count >= limit:
            return
        try:
            if raw.error is not None:
                raise raw.error
            yield spec.convert(raw.value, raw.source)
        except DataError as err:
            yield RowProblem(raw.source, err.category, str(err))


def load_dataset(name: str, args: DataArguments) -> LoadedData:
    """Every row of one dataset (at most `max_samples` / `num_samples`), good ones converted, bad ones collected."""
    loaded = LoadedData()
    for row in dataset_rows(name, args):
        loaded.rows_read += 1
        if isinstance(row, RowProblem):
            loaded.problems.append(row)
        else:
            loaded.examples.append(row)
    return loaded


def raw_rows(spec: DatasetSpec, dataset_dir: str | Path, streaming: bool = False) -> Iterator[RawRow]:
    """The rows of one dataset as read: from its hub (hf_hub_url / ms_hub_url) or its files."""
    if spec.hub:
        yield from hub_rows(spec, streaming)
        return
    for path in data_files(Path(dataset_dir), spec.file_name):
        yield from iter_rows(path)


def mix(parts: list[list[Example]], strategy: str, probs: list[float] | None, seed: int) -> list[Example]:
    """Concatenate, or interleave with `datasets.interleave_datasets` (as LLaMA-Factory does) and its
    stopping strategies: first_exhausted for interleave_under, all_exhausted for interleave_over."""
    if strategy == "concat" or len(parts) == 1:
        return [e for part in parts for e in part]
    from datasets import Dataset, interleave_datasets

    indexed = [
        Dataset.from_dict({"part": [i] * len(p), "row": list(range(len(p)))}) for i, p in enumerate(parts)
    ]
    stopping = "first_exhausted" if strategy == "interleave_under" else "all_exhausted"
    mixed = interleave_datasets(indexed, probabilities=probs, seed=seed, stopping_strategy=stopping)
    return [parts[p][r] for p, r in zip(mixed["part"], mixed["row"], strict=True)]


def load_examples(args: DataArguments, on_bad_rows: str = "error", seed: int = 42) -> LoadedData:
    """All datasets in `args.dataset`, concatenated in order. Raises `BadRowsError` if any row is bad and
    `on_bad_rows` is `error`."""
    if not args.dataset:
        raise DataError("no dataset given; set `dataset:` to a name from dataset_info.json", "config")
    total = LoadedData()
    parts: list[list[Example]] = []
    for name in args.dataset:
        part = load_dataset(name, args)
        if part.rows_read == 0:
            raise DataError(f"dataset '{name}' has no rows", "empty")
        parts.append(part.examples)
        total.problems += part.problems
        total.rows_read += part.rows_read
    total.examples = mix(parts, args.mix_strategy, args.interleave_probs, seed)
    if total.problems and on_bad_rows == "error":
        raise BadRowsError(total.problems, total.rows_read)
    return total
