"""`reward_model_type: full`: the reward model is loaded as its own model with its scoring head."""

from __future__ import annotations

from typing import Any

from tuneforge.train.reward_models import register_reward_model


@register_reward_model("full")
def build(cfg: Any, policy: Any, tokenizer: Any) -> Any:
    from tuneforge.model.loader import load_model
    from tuneforge.train.ppo import FullRewardModel

    args = cfg.model.model_copy(
        update={"model_name_or_path": cfg.finetuning.reward_model, "adapter_name_or_path": None}
    )
    return FullRewardModel(load_model(args, head="score"))
