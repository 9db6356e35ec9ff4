"""Which generated tasks are kept: length in words, blocked words, and ROUGE-L against everything kept so far.

Words are split by jieba (Chinese words and English words alike, as `tuneforge eval`'s ROUGE splits them);
ROUGE-L F1 is computed by rouge-chinese on those words, so a Chinese instruction is compared word by word
rather than as one long token.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from tuneforge.utils.errors import UserError


def _jieba() -> Any:
    try:
        import jieba
    except ImportError:
        raise UserError("tuneforge synth splits words with jieba: pip install 'tuneforge[synth]'") from None
    jieba.setLogLevel(60)  # its dictionary-loading chatter is not for the user
    return jieba


def words(text: str) -> list[str]:
    """The words of `text`, lowercased, without spaces and punctuation."""
    return [
        w.lower()
        for w in _jieba().lcut(text)
        if w.strip() and not all(unicodedata.category(c)[0] in "PSZ" for c in w)
    ]


class Similarity:
    """The instructions kept so far, and the highest ROUGE-L F1 of a new one against them."""

    def __init__(self, texts: Iterable[str] = ()):
        try:
            from rouge_chinese import Rouge
        except ImportError:
            raise UserError(
                "tuneforge synth scores ROUGE-L with rouge-chinese: pip install 'tuneforge[synth]'"
            ) from None
        self._rouge = Rouge(metrics=["rouge-l"])
        self._kept: list[str] = []
        self._exact: set[str] = set()
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        tokens = words(text)
        if tokens:
            self._kept.append(" ".join(tokens))
        self._exact.add(" ".join(tokens))

    def best(self, text: str) -> float:
        """Highest ROUGE-L F1 between `text` and a kept instruction (1.0 for the same words; 0.0 when none)."""
        tokens = " ".join(words(text))
        if tokens in self._exact:
            return 1.0
        if not tokens or not self._kept:
            return 0.0
        scores = self._rouge.get_scores([tokens] * len(self._kept), self._kept)
        return max(s["rouge-l"]["f"] for s in scores)


def blocked_word(text: str, blocked: Sequence[str]) -> str | None:
    """The first blocked word in `text`: English ones as whole words (any case), others as substrings."""
    lower = text.lower()
    for word in blocked:
        target = word.lower().strip()
        if not target:
            continue
        if target.isascii():
            if re.search(rf"(?<![a-z0-9]){re.escape(target)}(?![a-z0-9])", lower):
                return word
        elif target in lower:
            return word
    return None
