"""`accuracy`: a verifiable math reward. 1.0 when the completion's final answer equals the dataset's `answer`
as mathematics, not as text: `\\boxed{1/2}`, `0.5` and `\\frac{1}{2}` are one number, `1,000` is 1000, a
GSM8K reference `... #### 72` is 72. Answers are extracted and compared by Hugging Face's math-verify
(`pip install math-verify`; what TRL's accuracy reward uses). A reference it cannot parse as mathematics
is compared as normalised text, so the reward still means something on non-math rows.

An expression left unevaluated is not an answer: math-verify would score "To calculate 9 + 14, we ..." as
equal to 23, and a GRPO policy on SmolLM2 learned within 30 steps to restate every question that way
(bench/grpo_arithmetic.py), so a completion whose extracted answer is a sum, difference or product of
numbers scores 0 (fractions such as 1/2 still count).
"""

from __future__ import annotations

import re
from typing import Any

from tuneforge.train.rewards import register_reward
from tuneforge.train.rewards.answer import _normalise
from tuneforge.utils.errors import UserError

UNEVALUATED = re.compile(r"\d\s*[-+*×÷^]\s*\d")


def final_answer(completion: str) -> list[Any]:
    """math-verify's answer of `completion`, or [] when it is an unevaluated expression of numbers."""
    from math_verify import parse

    parsed = parse(completion)
    if parsed and UNEVALUATED.search(str(parsed[-1])):
        return []
    return parsed


def reference_text(answer: str) -> str:
    """The part of a reference answer to compare: after GSM8K's `####` marker when there is one."""
    return answer.rsplit("####", 1)[-1].strip() if "####" in answer else answer.strip()


def accuracy(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    from math_verify import parse, verify

    scores = []
    for completion, reference in zip(completions, answer, strict=True):
        gold = parse(reference_text(reference))
        if gold:
            scores.append(float(verify(gold, final_answer(completion))))
        else:
            scores.append(float(_normalise(reference_text(reference)) == _normalise(completion)))
    return scores


def make_accuracy(finetuning: Any) -> Any:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        raise UserError("reward function 'accuracy' needs math-verify: pip install math-verify") from None
    return accuracy


register_reward("accuracy")(make_accuracy)
