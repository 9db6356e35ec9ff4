"""Pack tokenized rows into sequences of at most `cutoff_len` tokens, so no compute is spent on padding.

Best-fit decreasing bin packing keeps the number of sequences close to the minimum. Each packed
sequence remembers where its rows start: with neat packing the position ids restart at every row,
which transformers turns into a block-diagonal causal mask (SDPA) or varlen kernels (FlashAttention),
so no row attends to another and the loss equals that of the rows trained one by one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuneforge.config import DataArguments
from tuneforge.data.collator import NeatPackingCollator, PaddingCollator
from tuneforge.data.conversation import DataError
from tuneforge.data.table import ExampleRows, TokenTable
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample


@dataclass
class PackedSequence:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    sources: list[str]

    def as_row(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels, "position_ids": self.position_ids}


def pack_examples(examples: Sequence[TokenizedExample], capacity: int, neat: bool) -> list[PackedSequence]:
    """Best-fit decreasing: longest rows first, each into the fullest sequence it still fits in."""
    sizes = (
        examples.lengths().tolist()
        if isinstance(examples, TokenTable)
        else [len(e.input_ids) for e in examples]
    )
    order = sorted(range(len(examples)), key=sizes.__getitem__, reverse=True)
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        size = sizes[i]
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (room - size, b))
    return [_concatenate([examples[i] for i in members], neat) for members in bins]


def _concatenate(rows: list[TokenizedExample], neat: bool) -> PackedSequence:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for row in rows:
        ids += row.input_ids
        # The first token of a row has nothing of its own before it: never predict it from the previous row.
        labels += [IGNORE_INDEX, *row.labels[1:]]
        start = 0 if neat else len(positions)
        positions += range(start, start + len(row.input_ids))
    return PackedSequence(ids, labels, positions, [r.source for r in rows])


def training_rows(
    examples: Sequence[TokenizedExample], args: DataArguments, stage: str, pad_token_id: int
) -> tuple[Sequence[dict[str, Any]], PaddingCollator]:
    """Rows and the collator for them: packed when `packing`/`neat_packing` say so (packing defaults on for pt).
    Unpacked rows of a `TokenTable` stay in it and are built as the Trainer reads them."""
    packing = args.neat_packing or (args.packing if args.packing is not None else stage == "pt")
    if not packing:
        if isinstance(examples, TokenTable):
            return ExampleRows(examples), PaddingCollator(pad_token_id)
        rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
        for row, example in zip(rows, examples, strict=True):
            if example.images:
                row["images"] = example.images
        return rows, PaddingCollator(pad_token_id)
    with_images = next((e for e in examples if e.images), None)
    if with_images is not None:
        raise DataError(
            f"rows with images, videos or audio cannot be packed (first: {with_images.source}): their tokens must stay in one "
            "row with their pixels or sound; set packing: false and neat_packing: false",
            "multimodal",
        )
    packed = pack_examples(examples, args.cutoff_len, args.neat_packing)
    return [p.as_row() for p in packed], collator_for(args, pad_token_id)


def collator_for(args: DataArguments, pad_token_id: int) -> PaddingCollator:
    """Neat-packed rows go without an attention mask (positions say where rows start); others are padded."""
    return NeatPackingCollator(pad_token_id) if args.neat_packing else PaddingCollator(pad_token_id)
