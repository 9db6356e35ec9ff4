"""Batch tokenized examples: pad to the longest row of the batch only, labels padded with IGNORE_INDEX."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.data.tokenized import IGNORE_INDEX


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False, length: int | None = None) -> Any:
    """`[len(rows), length]` long tensor of the rows padded with `value` to `length` (default: the longest),
    on the right (training batches) or the left (prompts for generation). The one padding function."""
    import torch

    length = max(len(r) for r in rows) if length is None else length
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            target = out[i, length - len(row) :] if left else out[i, : len(row)]
            target.copy_(torch.as_tensor(row, dtype=torch.long))
    return out


def pad_batch(
    ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> dict[str, Any]:
    """Right-padded `{input_ids, attention_mask, labels}` of token rows and their labels."""
    return {
        "input_ids": pad_rows(ids, pad_id, length=length),
        "attention_mask": pad_rows([[1] * len(r) for r in ids], 0, length=length),
        "labels": pad_rows(labels, IGNORE_INDEX, length=length),
    }


class PaddingCollator:
    """Right-pads `input_ids` with `pad_token_id`, `labels` with IGNORE_INDEX; returns [batch, seq] tensors."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = pad_batch(
            [r["input_ids"] for r in rows], [r["labels"] for r in rows], self.pad_token_id, longest
        )
        if "position_ids" in rows[0]:
            batch["position_ids"] = self._positions(rows, longest)
        if "sample_id" in rows[0]:  # which training rows a batch held, for the numerics guard's report
            batch["sample_ids"] = torch.tensor([row["sample_id"] for row in rows])
        return batch

    @staticmethod
    def _positions(rows: Sequence[dict[str, Any]], longest: int) -> Any:
        """Each row's position ids; padding continues as a sequence of its own so packing stays detectable."""
        import torch

        positions = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["position_ids"])
            positions[i, :n] = torch.tensor(row["position_ids"])
            positions[i, n:] = torch.arange(longest - n)
        return positions


class NeatPackingCollator(PaddingCollator):
    """For rows packed with restarting position ids: no attention mask, so transformers derives a
    block-diagonal causal mask from `position_ids`; `num_tokens` says how many tokens of each row are
    real (one value per row, so batches can be concatenated like every other field)."""

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(rows)
        batch["num_tokens"] = batch.pop("attention_mask").sum(dim=1)
        return batch
