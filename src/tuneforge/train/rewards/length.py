"""`length`: prefers completions of `reward_length_target` characters."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tuneforge.config.plugins import Params
from tuneforge.train.rewards import RewardFunc, register_reward


class LengthParams(Params):
    reward_length_target: int = Field(
        200, gt=0, description="grpo: completion length (characters) `length` prefers."
    )


def make_length_reward(target: int) -> RewardFunc:
    """1.0 at `target` characters, falling linearly to 0 at 0 and 2 x target characters."""

    def length_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [max(0.0, 1 - abs(len(c) - target) / target) for c in completions]

    return length_reward


@register_reward("length", LengthParams)
def build(finetuning: Any) -> RewardFunc:
    return make_length_reward(finetuning.reward_length_target)
