"""PPO (RLHF): a LoRA policy, its reference, a reward model and a critic sharing one base model.

Run as: tuneforge train examples/ppo.yaml   (after a stage rm run whose output is reward_model)
"""

from __future__ import annotations

import sys
from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.data.preference import PromptCollator, build_prompt_data
from tuneforge.model.loader import load_model, load_tokenizer, local_adapter
from tuneforge.train.output import prepare_output_dir


def run(cfg: RunConfig) -> Path:
    from tuneforge.train.ppo import (
        FullRewardModel,
        KLController,
        PolicyWithValueHead,
        PPOTrainer,
        SharedRewardAdapter,
    )
    from tuneforge.train.rewards import load_reward_funcs
    from tuneforge.train.runner import build_model, number_rows, train_and_save

    f = cfg.finetuning
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_prompt_data(cfg.data, tokenizer, seed=cfg.training.seed)
    policy = build_model(cfg)
    if f.reward_model and f.reward_model_type == "lora":
        reward_dir = str(local_adapter(f.reward_model, cfg.model))  # a folder, or a hub id downloaded
        reward = SharedRewardAdapter(policy, reward_dir, tokenizer.pad_token_id)
        print(
            f"tuneforge: reward model {f.reward_model} shares the base model as adapter 'reward'",
            file=sys.stderr,
        )
    elif f.reward_model:
        args = cfg.model.model_copy(
            update={"model_name_or_path": f.reward_model, "adapter_name_or_path": None}
        )
        reward = FullRewardModel(load_model(args, head="score"))
    else:
        reward = load_reward_funcs(f.reward_funcs, f.reward_format_regex, f.reward_length_target)
    return train_and_save(
        cfg,
        PPOTrainer,
        PolicyWithValueHead(policy),
        tokenizer,
        number_rows(data.train),
        data.eval,
        PromptCollator(),
        output_dir,
        resume,
        reward=reward,
        ppo_epochs=f.ppo_epochs,
        buffer_size=f.ppo_buffer_size,
        kl=KLController(f.ppo_kl_coef, f.ppo_target),
        cliprange=f.ppo_cliprange,
        cliprange_value=f.ppo_cliprange_value,
        vf_coef=f.ppo_vf_coef,
        score_norm=f.ppo_score_norm,
        whiten_rewards=f.ppo_whiten_rewards,
        max_new_tokens=f.max_completion_length,
        temperature=f.rollout_temperature,
    )
