"""Token ids and labels for rows rendered by a LLaMA-Factory named template, as LLaMA-Factory builds them.

Every string piece is tokenized on its own (all pieces of a chunk in one batched call), special pieces are
one id, and turns are assembled with LLaMA-Factory's supervised rules: each turn's prompt and answer are
shortened in proportion to what is left of `cutoff_len` (truncation: proportional), prompts are masked
unless `train_on_prompt`, with `mask_history` only the last answer is trained (and the oldest turns go
first when space runs out), and efficient-eos templates end with one trained eos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.data.slots import Piece, SlotTemplate, Special, Turn, special_ids
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample
from tuneforge.data.truncation import Truncation, infer_seqlen

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SlotItem = tuple[list[Turn], str]
"""A rendered row: its turns of pieces, and its source (file:line)."""


class SlotEncoder:
    """Same interface as `encode.Encoder`: `texts` -> `encode` (may run in another thread) -> `examples`."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        template: SlotTemplate,
        cutoff_len: int,
        train_on_prompt: bool = False,
        mask_history: bool = False,
        truncation: Truncation = "proportional",
    ):
        self.backend = tokenizer._tokenizer
        self.template = template
        self.specials = special_ids(template, tokenizer)
        self.cutoff_len = cutoff_len
        self.train_on_prompt = train_on_prompt
        self.mask_history = mask_history
        self.truncation = truncation

    @staticmethod
    def texts(items: list[SlotItem]) -> list[str]:
        return [
            p
            for turns, _ in items
            for prompt, target in turns
            for p in (*prompt, *target)
            if isinstance(p, str) and p
        ]

    def encode(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def examples(self, items: list[SlotItem], encoded: list[list[int]]) -> list[TokenizedExample]:
        ids_of = iter(encoded)
        out = []
        for turns, source in items:
            tokenized = [(self._ids(prompt, ids_of), self._ids(target, ids_of)) for prompt, target in turns]
            out.append(self._example(tokenized, source))
        return out

    def __call__(self, items: list[SlotItem]) -> list[TokenizedExample]:
        return self.examples(items, self.encode(self.texts(items)))

    def _ids(self, pieces: list[Piece], ids_of: Any) -> list[int]:
        ids: list[int] = []
        for piece in pieces:
            if isinstance(piece, Special):
                ids += self.specials[piece.which]
            elif piece:
                ids += next(ids_of)
        return ids

    def _example(self, turns: list[tuple[list[int], list[int]]], source: str) -> TokenizedExample:
        eos = self.specials["eos"]
        total_length = sum(len(p) + len(t) for p, t in turns)
        if self.mask_history:
            turns = turns[::-1]
        ids: list[int] = []
        labels: list[int] = []
        used = 0
        proportional = self.truncation == "proportional"
        for k, (prompt, target) in enumerate(turns):
            if proportional:
                if used >= self.cutoff_len:
                    break
                keep_prompt, keep_target = infer_seqlen(len(prompt), len(target), self.cutoff_len - used)
                prompt, target = prompt[:keep_prompt], target[:keep_target]
            used += len(prompt) + len(target)
            if self.train_on_prompt:
                prompt_labels = prompt
            elif self.template.efficient_eos and k and prompt and eos:
                prompt_labels = eos[:1] + [IGNORE_INDEX] * (len(prompt) - 1)  # the previous answer's eos
            else:
                prompt_labels = [IGNORE_INDEX] * len(prompt)
            target_labels = [IGNORE_INDEX] * len(target) if self.mask_history and k else target
            if self.mask_history:
                ids, labels = prompt + target + ids, prompt_labels + target_labels + labels
            else:
                ids, labels = ids + prompt + target, labels + prompt_labels + target_labels
        if self.template.efficient_eos:
            ids, labels = ids + eos, labels + eos
        if not proportional:
            ids, labels = ids[: self.cutoff_len], labels[: self.cutoff_len]
        return TokenizedExample(ids, labels, source, total_length > self.cutoff_len)


def prompt_ids(pieces: list[Piece], tokenizer: PreTrainedTokenizerBase, template: SlotTemplate) -> list[int]:
    """Token ids of prompt pieces (for chat and serving), tokenized piece by piece as in training."""
    specials = special_ids(template, tokenizer)
    ids: list[int] = []
    for piece in pieces:
        if isinstance(piece, Special):
            ids += specials[piece.which]
        elif piece:
            ids += tokenizer.encode(piece, add_special_tokens=False)
    return ids
