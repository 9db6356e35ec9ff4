"""PPO (RLHF): a LoRA policy, its reference, a reward model and a critic sharing one base model.

Run as: tuneforge train examples/ppo.yaml   (after a stage rm run whose output is reward_model)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params
from tuneforge.data.preference import PromptCollator, build_prompt_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage
from tuneforge.train.stages.grpo import RolloutParams, check_rollout_backend


class RewardModelParams(Params):
    """A trained reward model as the judge of sampled answers (ppo, online_dpo)."""

    reward_model: str | None = Field(
        None,
        description="ppo/online_dpo: output directory of a stage rm run (default: reward_funcs score the answers).",
        json_schema_extra={"path": "maybe"},
    )
    reward_model_type: str = Field(
        "lora",
        description="ppo/online_dpo: lora shares the policy's base model in memory; full loads a separate model.",
    )


def reward_judge(cfg: RunConfig, policy: Any, tokenizer: Any) -> Any:
    """What scores sampled answers: the reward model when `reward_model` is set, else the reward functions."""
    from tuneforge.train.reward_models import REWARD_MODELS
    from tuneforge.train.rewards import load_reward_funcs

    f = cfg.finetuning
    if f.reward_model:
        return REWARD_MODELS.get(f.reward_model_type).target(cfg, policy, tokenizer)
    return load_reward_funcs(f.reward_funcs, f)


class PPOParams(RolloutParams, RewardModelParams):
    ppo_epochs: int = Field(4, gt=0, description="ppo: optimisation passes over each rollout batch.")
    ppo_buffer_size: int = Field(1, gt=0, description="ppo: minibatches each rollout batch is split into.")
    ppo_score_norm: bool = Field(
        False, description="ppo: standardise scores with their running mean and std."
    )
    ppo_whiten_rewards: bool = Field(False, description="ppo: whiten per-token rewards before GAE.")
    ppo_target: float | None = Field(
        6.0,
        gt=0,
        description="ppo: KL (per answer) the adaptive KL coefficient aims at; empty for a fixed one.",
    )
    ppo_kl_coef: float = Field(0.05, ge=0, description="ppo: initial KL penalty coefficient.")
    ppo_cliprange: float = Field(0.2, gt=0, description="ppo: clip range of the policy ratio.")
    ppo_cliprange_value: float = Field(0.2, gt=0, description="ppo: clip range of the value update.")
    ppo_vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss.")


@register_stage("ppo", PPOParams)
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.ppo import KLController, PolicyWithValueHead, PPOTrainer
    from tuneforge.train.runner import build_model, number_rows, train_and_save

    f = cfg.finetuning
    check_rollout_backend(f)
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_prompt_data(cfg.data, tokenizer, seed=cfg.training.seed)
    policy = build_model(cfg)
    reward = reward_judge(cfg, policy, tokenizer)
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
        rollout_backend=f.rollout_backend,
    )
