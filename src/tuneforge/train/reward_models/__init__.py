"""Where PPO's reward comes from when `reward_model` is set: `reward_model_type: NAME` picks the member.

A member is `build(cfg, policy, tokenizer) -> reward`, a callable scoring a batch `{input_ids,
attention_mask}` with one float per row. Without `reward_model`, the `reward_funcs` score the answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneforge.config.plugins import family

REWARD_MODELS = family("reward_model_type")


def register_reward_model(name: str) -> Callable[[Any], Any]:
    return REWARD_MODELS.register(name)
