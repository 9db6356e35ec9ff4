"""Rewards that compare a completion with the dataset's reference answer (its `answer` column)."""

from __future__ import annotations

from typing import Any

from tuneforge.train.rewards import register_reward


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split()).rstrip(".")


def exact_match(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion equals the reference answer (case, spacing and a final period ignored)."""
    return [float(_normalise(c) == _normalise(a)) for c, a in zip(completions, answer, strict=True)]


def contains_answer(
    prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any
) -> list[float]:
    """1.0 when the reference answer appears in the completion."""
    return [float(_normalise(a) in _normalise(c)) for c, a in zip(completions, answer, strict=True)]


register_reward("exact_match")(lambda finetuning: exact_match)
register_reward("contains_answer")(lambda finetuning: contains_answer)
