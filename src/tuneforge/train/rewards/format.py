"""`format`: 1.0 when the whole completion matches `reward_format_regex`."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from tuneforge.config.plugins import Params
from tuneforge.train.rewards import RewardFunc, register_reward
from tuneforge.utils.errors import UserError


class FormatParams(Params):
    reward_format_regex: str | None = Field(
        None, description="grpo: regex a completion must match for `format`."
    )


def make_format_reward(pattern: str) -> RewardFunc:
    """1.0 when the whole completion matches `pattern` (a Python regex, DOTALL)."""
    compiled = re.compile(pattern, re.DOTALL)

    def format_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [float(compiled.fullmatch(c.strip()) is not None) for c in completions]

    return format_reward


@register_reward("format", FormatParams)
def build(finetuning: Any) -> RewardFunc:
    if not finetuning.reward_format_regex:
        raise UserError("reward_funcs 'format' needs reward_format_regex (e.g. '<think>.*</think>.*')")
    return make_format_reward(finetuning.reward_format_regex)
