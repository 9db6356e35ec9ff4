"""Tokenized rows kept compact: every row's ids and labels in two flat int32 arrays.

A Python list spends about 36 bytes on each token id (a pointer and an int object), so 50,000 rows
of 220 tokens took about 0.5 GB as lists and take 88 MB here; the tokenized cache is these same
arrays, so a second run reads them back without building a list per row. Rows become
`TokenizedExample`s (lists, as everything downstream expects) only when they are read, one at a
time, and `ExampleRows` hands the Trainer rows the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, overload

import numpy as np

from tuneforge.data.loader import RowProblem
from tuneforge.data.tokenized import TokenizedExample


class TokenTable(Sequence[TokenizedExample]):
    def __init__(
        self,
        ids: np.ndarray,
        labels: np.ndarray,
        offsets: np.ndarray,
        sources: list[str],
        truncated: np.ndarray,
        images: list[tuple[str, ...]] | None = None,
    ):
        self.ids, self.labels, self.offsets = ids, labels, offsets
        self.sources, self.truncated = sources, truncated
        self.images = images  # per row, when any row has images

    @classmethod
    def from_examples(cls, examples: Sequence[TokenizedExample]) -> TokenTable:
        if isinstance(examples, TokenTable):
            return examples
        lengths = np.fromiter((len(e.input_ids) for e in examples), dtype=np.int64, count=len(examples))
        offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])

        def flat(field: str) -> np.ndarray:  # chained in C: a Python loop over every token took seconds
            values = chain.from_iterable(getattr(e, field) for e in examples)
            return np.fromiter(values, dtype=np.int32, count=total)

        truncated = np.fromiter((e.truncated for e in examples), dtype=np.int8, count=len(examples))
        images = [e.images for e in examples] if any(e.images for e in examples) else None
        return cls(
            flat("input_ids"), flat("labels"), offsets, [e.source for e in examples], truncated, images
        )

    def __len__(self) -> int:
        return len(self.sources)

    @overload
    def __getitem__(self, index: int) -> TokenizedExample: ...
    @overload
    def __getitem__(self, index: slice) -> TokenTable: ...
    def __getitem__(self, index: int | slice) -> TokenizedExample | TokenTable:
        if isinstance(index, slice):
            return self.take(range(len(self))[index])
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        a, b = int(self.offsets[index]), int(self.offsets[index + 1])
        return TokenizedExample(
            self.ids[a:b].tolist(),
            self.labels[a:b].tolist(),
            self.sources[index],
            bool(self.truncated[index]),
            self.images[index] if self.images else (),
        )

    def __iter__(self) -> Iterator[TokenizedExample]:
        return (self[i] for i in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def token_count(self) -> int:
        return int(self.offsets[-1])

    def take(self, rows: Iterable[int]) -> TokenTable:
        """A table of these rows, in this order."""
        rows = np.asarray(list(rows), dtype=np.int64)
        lengths = self.lengths()[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if len(rows):
            spans = [np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]
            where = np.concatenate(spans)
        else:
            where = np.zeros(0, dtype=np.int64)
        return TokenTable(
            self.ids[where],
            self.labels[where],
            offsets,
            [self.sources[r] for r in rows],
            self.truncated[rows],
            [self.images[r] for r in rows] if self.images else None,
        )


class ExampleRows(Sequence[dict[str, Any]]):
    """The Trainer's view of a table: row i is `{"input_ids", "labels", "sample_id": i}` (and its `images`), built
    when read."""

    def __init__(self, table: TokenTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        example = self.table[index]
        row = {"input_ids": example.input_ids, "labels": example.labels, "sample_id": index % len(self)}
        if example.images:
            row["images"] = example.images
        return row


@dataclass
class SFTData:
    train: Sequence[TokenizedExample]  # a TokenTable once built (compact; rows made when read)
    eval: list[TokenizedExample] = field(default_factory=list)
    truncated: int = 0
    dropped_no_target: list[str] = field(default_factory=list)
    skipped: list[RowProblem] = field(default_factory=list)
    special_token_rows: list[str] = field(default_factory=list)
    dropped_cut_images: list[str] = field(default_factory=list)  # rows whose image tokens cutoff_len cut

    def summary(self) -> str:
        tokens = (
            self.train.token_count()
            if isinstance(self.train, TokenTable)
            else sum(len(e.input_ids) for e in self.train)
        )
        text = f"{len(self.train)} training rows ({tokens} tokens)"
        if self.eval:
            text += f", {len(self.eval)} evaluation rows"
        if self.truncated:
            text += f", {self.truncated} truncated to cutoff_len"
        if self.dropped_no_target:
            text += f", {len(self.dropped_no_target)} dropped with no trainable token left"
        if self.dropped_cut_images:
            text += f", {len(self.dropped_cut_images)} dropped with their image tokens cut"
        if self.skipped:
            text += f", {len(self.skipped)} bad rows skipped"
        return text
