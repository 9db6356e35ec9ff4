"""Turning a growing list of token ids into text pieces safe to show as they come.

Byte-level tokenizers split a Chinese character (three UTF-8 bytes) over several tokens; decoding
a prefix then ends in U+FFFD. Text is released only up to the last complete character, and a tail
that could be the start of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Feed token ids one at a time; `push` returns the text that became final (maybe "")."""

    def __init__(self, tokenizer: Any, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already returned
        self.stopped = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Text made final by `token_id`. After a stop string appears, `stopped` is True and nothing more comes."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        text = self._text()
        cut = self._stop_at(text)
        if cut is not None:
            self.stopped = True
            return text[self.emitted : cut] if cut > self.emitted else ""
        safe = len(text)
        while safe > self.emitted and text[safe - 1] == REPLACEMENT:
            safe -= 1  # an incomplete multi-byte character: wait for the rest of its bytes
        safe = min(safe, self._stop_prefix_start(text[:safe]))
        piece = text[self.emitted : safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return piece

    def flush(self) -> str:
        """Everything not yet returned, at the end of generation (a held-back tail was not a stop string)."""
        if self.stopped:
            return ""
        text = self._text()
        piece = text[self.emitted :]
        self.emitted = len(text)
        return piece

    def _stop_at(self, text: str) -> int | None:
        found = [i for i in (text.find(s, max(0, self.emitted - len(s))) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _stop_prefix_start(self, text: str) -> int:
        """Where a suffix of `text` that begins some stop string starts (len(text) if none)."""
        start = len(text)
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    start = min(start, len(text) - n)
                    break
        return max(start, self.emitted)
