"""A batch of requests being decoded together: left-padded, sharing one KV cache.

Rows leave the batch as soon as they finish (`keep`), and new requests join a running batch at a
step boundary (`join`): their own prefilled cache is left-padded to the same length and stacked
under the running one, so a request arriving mid-way waits one step, not a whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.collator import pad_rows


@dataclass
class Batch:
    rows: list[Any]  # the engine's per-request state, in batch order
    cache: Any  # transformers KV cache: per layer keys/values [batch, heads, seq, head_dim]
    mask: torch.Tensor  # [batch, cached + next] 1 for real tokens, 0 for left padding
    positions: torch.Tensor  # [batch, next] position ids of `next_input`
    next_input: torch.Tensor  # [batch, next] token ids to feed on the next forward pass

    @classmethod
    def start(cls, rows: list[Any], prompts: list[list[int]], pad_id: int, cache: Any) -> Batch:
        """Prompts left-padded to the longest; the first forward pass feeds them whole."""
        ids = pad_rows(prompts, pad_id, left=True)
        mask = pad_rows([[1] * len(p) for p in prompts], 0, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return cls(rows, cache, mask, positions, ids)

    def keep(self, indices: list[int]) -> None:
        """Drop every row not in `indices` (finished or cancelled) from the batch and its cache."""
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in indices]
        if not indices:
            return
        index = torch.tensor(indices)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]

    def advance(self, tokens: list[int]) -> None:
        """Feed `tokens` (one per remaining row) on the next pass."""
        self.next_input = torch.tensor(tokens)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        self.positions = self.positions[:, -1:] + 1

    def can_join(self) -> bool:
        """Whether other rows can be stacked into this cache (plain growing layers only, no sliding windows)."""
        layers = getattr(self.cache, "layers", None)
        return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)

    def join(self, other: Batch) -> None:
        """Stack `other` (also ready for its next pass) under this batch; both caches are left-padded to one length."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, length - 1), _left_pad(theirs.keys, length - 1)])
            mine.values = torch.cat(
                [_left_pad(mine.values, length - 1), _left_pad(theirs.values, length - 1)]
            )
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)])
        self.positions = torch.cat([self.positions, other.positions])
        self.next_input = torch.cat([self.next_input, other.next_input])
        self.rows = self.rows + other.rows


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zeros in front along the sequence axis (dim -1 of a mask, dim -2 of keys/values) up to `length`."""
    dim = -1 if tensor.dim() == 2 else -2
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
