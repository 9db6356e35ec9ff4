"""`reward_model_type: lora`: the reward model (a stage rm LoRA output) shares the policy's base model as
adapter 'reward', so no second copy of the weights is in memory."""

from __future__ import annotations

from typing import Any

from tuneforge.train.reward_models import register_reward_model
from tuneforge.utils.log import info


@register_reward_model("lora")
def build(cfg: Any, policy: Any, tokenizer: Any) -> Any:
    from tuneforge.model.loader import local_adapter
    from tuneforge.train.ppo import SharedRewardAdapter

    reward_model = cfg.finetuning.reward_model
    reward_dir = str(local_adapter(reward_model, cfg.model))  # a folder, or a hub id downloaded
    info(f"reward model {reward_model} shares the base model as adapter 'reward'")
    return SharedRewardAdapter(policy, reward_dir, tokenizer.pad_token_id)
