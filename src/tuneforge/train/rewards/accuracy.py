"""`accuracy`: a verifiable math reward. 1.0 when the completion's final answer equals the dataset's `answer`
as mathematics, not as text: `\\boxed{1/2}`, `0.5` and `\\frac{1}{2}` are one number, `1,000` is 1000, a
GSM8K reference `... #### 72` is 72. Answers are extracted and compared by Hugging Face's math-verify
(`pip install math-verify`; what TRL's accuracy reward uses). A reference it cannot parse as mathematics
is compared as normalised text, so the reward still means something on non-math rows.
"""

from __future__ import annotations

from typing import Any

from tuneforge.train.rewards import register_reward
from tuneforge.train.rewards.answer import _normalise
from tuneforge.utils.errors import UserError


def reference_text(answer: str) -> str:
    """The part of a reference answer to compare: after GSM8K's `####` marker when there is one."""
    return answer.rsplit("####", 1)[-1].strip() if "####" in answer else answer.strip()


def accuracy(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    from math_verify import parse, verify

    scores = []
    for completion, reference in zip(completions, answer, strict=True):
        gold = parse(reference_text(reference))
        if gold:
            scores.append(float(verify(gold, parse(completion))))
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
