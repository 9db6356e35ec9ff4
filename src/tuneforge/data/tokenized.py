"""A tokenized training example: token ids and their labels, IGNORE_INDEX where no loss is taken."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = (
    -100
)  # the label of a position the loss skips (prompt, padding), as PyTorch's cross-entropy expects


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    source: str = "?"
    truncated: bool = False
    images: tuple[str, ...] = ()  # image files whose tokens are in input_ids, in order

    @property
    def trainable_tokens(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)
