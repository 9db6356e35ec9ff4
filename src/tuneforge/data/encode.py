"""Tokenize rendered rows into token ids and labels that train only on the answer spans.

The Rust tokenizer spends about a third of its time computing character offsets, and offsets are
only needed to map each answer's character span to token indices. Where the tokenizer's added
(special) tokens make that mapping exact from the ids alone, `Encoder` skips the offsets: text
between added tokens is tokenized independently of its neighbours, so an answer that ends right
after an end-of-turn token ends right after that token's id, and one that starts a fixed text
(e.g. `assistant\\n`) after a start-of-turn token starts where that text's own tokens end, which is
checked row by row. Any row where a check fails is tokenized again with offsets, and a tokenizer or
template for which most rows need that goes back to offsets for good.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any

from tuneforge.data.conversation import Conversation, DataError
from tuneforge.data.template import ChatTemplate, assistant_spans
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample
from tuneforge.data.truncation import Truncation, truncate_turns

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Item = tuple[str, list[tuple[int, int]], str]
"""A rendered row: its text, the character spans of the answers to train on, and its source."""

_MEMO_LIMIT = 4096


def _added_token_split(backend: Any) -> tuple[re.Pattern[str], dict[str, int]] | None:
    """A pattern finding the added tokens in raw text the way the tokenizer does (leftmost, longest),
    or None when some added token changes its neighbours (lstrip/rstrip/single_word, or matched after
    normalization), where only offsets are exact."""
    added = backend.get_added_tokens_decoder()
    normalizes = backend.normalizer is not None
    if not added or any(
        t.lstrip or t.rstrip or t.single_word or (t.normalized and normalizes) for t in added.values()
    ):
        return None
    ids = {t.content: i for i, t in added.items()}
    lead = os.path.commonprefix(list(ids))  # usually "<": the regex engine then jumps between its occurrences
    rest = "|".join(re.escape(c[len(lead) :]) for c in sorted(ids, key=len, reverse=True))
    return re.compile(f"{re.escape(lead)}(?:{rest})"), ids


def _offset_span(encoding: Any, start: int, end: int) -> tuple[int, int]:
    """Token index range [a, b) of the tokens whose first character lies in [start, end), from offsets."""
    n = len(encoding.ids)
    a = encoding.char_to_token(start) if start < end else None
    if a is None:
        return 0, 0
    if encoding.token_to_chars(a)[0] < start:  # a token straddling the start belongs to the prompt
        a += 1
    b = encoding.char_to_token(end - 1)
    b = n - 1 if b is None else b
    return a, b + 1


class Encoder:
    """Turns rendered rows into `TokenizedExample`s; `encode` may run in another thread (it only calls
    the Rust tokenizer, which releases the GIL), `examples` runs in the caller's."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        cutoff_len: int,
        train_on_prompt: bool = False,
        truncation: Truncation = "proportional",
    ):
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch"):
            raise DataError(
                "a fast (Rust) tokenizer is needed to locate answer tokens; load the model's tokenizer.json"
            )
        self.backend = backend
        self.cutoff_len = cutoff_len
        self.train_on_prompt = train_on_prompt
        self.truncation = truncation
        self.split = _added_token_split(backend)
        # without offsets when the labels need none (train_on_prompt) or can be found from ids
        self.from_ids = hasattr(backend, "encode_batch_fast") and (train_on_prompt or self.split is not None)
        self.rows = 0
        self.retried = 0
        self._prefixes: dict[str, list[int]] = {}

    @staticmethod
    def texts(items: list[Item]) -> list[str]:
        return [text for text, _, _ in items]

    def encode(self, texts: list[str]) -> tuple[bool, list[Any]]:
        """(whether these encodings lack offsets, the encodings): one batched call on every core."""
        if self.from_ids:
            return True, self.backend.encode_batch_fast(texts, add_special_tokens=False)
        return False, self.backend.encode_batch(texts, add_special_tokens=False)

    def examples(self, items: list[Item], encoded: tuple[bool, list[Any]]) -> list[TokenizedExample]:
        """Labels copy ids inside each row's answer spans; ids and labels are cut to `cutoff_len`."""
        without_offsets, encodings = encoded
        token_spans: list[list[tuple[int, int]] | None] = []
        ids_of = [encoding.ids for encoding in encodings]
        for (text, spans, _), ids, encoding in zip(items, ids_of, encodings, strict=True):
            if self.train_on_prompt:
                token_spans.append([(0, len(ids))])
            elif without_offsets:
                token_spans.append(self._spans_from_ids(text, ids, spans))
            else:
                token_spans.append([_offset_span(encoding, start, end) for start, end in spans])
        retry = [i for i, found in enumerate(token_spans) if found is None]
        if retry:
            with_offsets = self.backend.encode_batch([items[i][0] for i in retry], add_special_tokens=False)
            for i, encoding in zip(retry, with_offsets, strict=True):
                ids_of[i] = encoding.ids
                token_spans[i] = [_offset_span(encoding, start, end) for start, end in items[i][1]]
        if without_offsets:
            self.rows += len(items)
            self.retried += len(retry)
            if self.rows >= 256 and self.retried * 4 > self.rows:  # mostly misses: offsets at once is cheaper
                self.from_ids = False
        return [
            self._example(ids, found or [], source)
            for (_, _, source), ids, found in zip(items, ids_of, token_spans, strict=True)
        ]

    def __call__(self, items: list[Item]) -> list[TokenizedExample]:
        return self.examples(items, self.encode([text for text, _, _ in items]))

    def _example(self, ids: list[int], spans: list[tuple[int, int]], source: str) -> TokenizedExample:
        if self.train_on_prompt:
            labels = ids.copy()
        else:
            labels = [IGNORE_INDEX] * len(ids)
            for a, b in spans:
                labels[a:b] = ids[a:b]
        truncated = len(ids) > self.cutoff_len
        if truncated and self.truncation == "proportional" and spans and not self.train_on_prompt:
            ids, labels = truncate_turns(ids, labels, spans, self.cutoff_len)
        elif truncated:
            ids, labels = ids[: self.cutoff_len], labels[: self.cutoff_len]
        return TokenizedExample(ids, labels, source, truncated)

    def _spans_from_ids(
        self, text: str, ids: list[int], spans: list[tuple[int, int]]
    ) -> list[tuple[int, int]] | None:
        """Token spans of the answers, found from the added tokens' ids; None when that is not exact here."""
        assert self.split is not None
        pattern, added = self.split
        ends: list[int] = []
        where: list[int] = []
        at = -1
        for match in pattern.finditer(text):  # the k-th added token in the text is the k-th in the ids
            try:
                at = ids.index(added[match.group()], at + 1)
            except ValueError:
                return None
            ends.append(match.end())
            where.append(at)
        found = []
        for start, end in spans:
            if start >= end:
                continue
            k = bisect_right(ends, start) - 1  # the last added token before the answer
            if k < 0:
                return None
            lead = self._prefix(text[ends[k] : start])
            a = where[k] + 1 + len(lead)
            if ids[where[k] + 1 : a] != lead:  # the text before the answer merged into the answer's tokens
                return None
            if end == len(text):
                b = len(ids)
            else:
                j = bisect_left(ends, end)
                if j == len(ends) or ends[j] != end:  # the answer does not end with an added token
                    return None
                b = where[j] + 1
            found.append((a, b))
        return found

    def _prefix(self, text: str) -> list[int]:
        """Token ids of the text between an added token and an answer (usually a role header), memoized."""
        ids = self._prefixes.get(text)
        if ids is None:
            ids = self.backend.encode(text, add_special_tokens=False).ids if text else []
            if len(self._prefixes) < _MEMO_LIMIT:
                self._prefixes[text] = ids
        return ids


def encode_with_loss_masks(
    items: list[Item], tokenizer: PreTrainedTokenizerBase, cutoff_len: int, train_on_prompt: bool = False
) -> list[TokenizedExample]:
    """Tokenize (text, answer spans, source) triples in one batched call; labels copy ids inside the spans."""
    return Encoder(tokenizer, cutoff_len, train_on_prompt)(items)


def render_with_loss_mask(
    conversation: Conversation,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    cutoff_len: int,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    truncation: Truncation = "proportional",
) -> TokenizedExample:
    """Token ids and labels of one conversation: labels equal ids on answer tokens and IGNORE_INDEX elsewhere,
    shortened to `cutoff_len`."""
    if not isinstance(template, str):
        from tuneforge.data.slot_encode import SlotEncoder

        encoder = SlotEncoder(tokenizer, template, cutoff_len, train_on_prompt, mask_history, truncation)
        return encoder([(template.turns(conversation, mask_history), conversation.source)])[0]
    text, spans = assistant_spans(conversation, tokenizer, template)
    if mask_history:
        spans = spans[-1:]
    return Encoder(tokenizer, cutoff_len, train_on_prompt, truncation)([(text, spans, conversation.source)])[
        0
    ]
