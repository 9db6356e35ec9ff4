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


MERGEABLE_KEYS = {"input_ids", "attention_mask", "labels", "sample_ids"}


def merge_batches(batches: Sequence[dict[str, Any]], max_tokens: int) -> dict[str, Any] | None:
    """The rows of several right-padded batches as one packed row: `input_ids`, `labels`, restarting
    `position_ids` (transformers then attends within each row only), `num_tokens` and `sample_ids`.

    The first label of every row is IGNORE_INDEX, so no row predicts the next one's first token; it is never a
    target in the batches either (labels shift by one), so the loss and its normaliser are unchanged. None when
    the batches hold anything else (packed rows, images, pairs), are not right-padded, or would make more than
    `max_tokens` tokens."""
    import torch

    if not batches or any(set(b) - MERGEABLE_KEYS or "attention_mask" not in b for b in batches):
        return None
    ids, labels, positions, samples = [], [], [], []
    for batch in batches:
        for row, mask in enumerate(batch["attention_mask"]):
            n = int(mask.sum())
            if not bool(mask[:n].all()):  # left-padded: not a training batch
                return None
            ids.append(batch["input_ids"][row, :n])
            label = batch["labels"][row, :n].clone()
            label[:1] = IGNORE_INDEX
            labels.append(label)
            positions.append(torch.arange(n))
        if "sample_ids" in batch:
            samples.append(batch["sample_ids"])
    total = sum(len(r) for r in ids)
    if total > max_tokens:
        return None
    merged = {
        "input_ids": torch.cat(ids)[None],
        "labels": torch.cat(labels)[None],
        "position_ids": torch.cat(positions)[None],
        "num_tokens": torch.tensor([total]),
    }
    if samples:
        merged["sample_ids"] = torch.cat(samples)
    return merged
