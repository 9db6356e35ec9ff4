"""GRPO: sample a group of answers per prompt, reward them, make the better-than-average ones likelier.

Run as: tuneforge train examples/grpo.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params
from tuneforge.config.schema import split_names
from tuneforge.data.preference import PromptCollator, build_prompt_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage
from tuneforge.train.stages.dpo import ReferenceParams
from tuneforge.utils.errors import UserError


class RolloutParams(Params):
    """How the online stages (grpo, ppo, online_dpo) sample and score answers."""

    reward_funcs: list[str] = Field(
        default_factory=list,
        description="grpo/ppo/online_dpo: rewards to add up: exact_match, contains_answer, accuracy, format, "
        "length, module:function or path/to/file.py:function.",
    )
    max_completion_length: int = Field(
        128, gt=0, description="grpo/ppo/online_dpo: longest sampled answer, in tokens."
    )
    rollout_temperature: float = Field(
        1.0, gt=0, description="grpo/ppo/online_dpo: sampling temperature of the answers."
    )
    rollout_backend: Literal["engine", "transformers", "vllm"] = Field(
        "engine",
        description="grpo/ppo/online_dpo: what samples the answers: engine (tuneforge's decoding core: finished "
        "answers leave the batch), transformers (model.generate), vllm (not available yet: refused).",
    )

    _split_reward_funcs = field_validator("reward_funcs", mode="before")(split_names)


class GRPOParams(RolloutParams, ReferenceParams):
    num_generations: int = Field(4, ge=2, description="grpo: answers sampled per prompt (the group).")
    grpo_beta: float = Field(0.04, ge=0, description="grpo: weight of the KL penalty towards the reference.")
    grpo_loss_type: str = Field(
        "grpo",
        description="grpo: how tokens and answers are weighed (tuneforge/train/grpo_losses/): grpo (per answer), "
        "bnpo (per token of the batch), dapo (per token of the global batch), dr_grpo (constant length), "
        "gspo (one clipped ratio per answer).",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="grpo: clip range below 1 of the importance ratio.")
    epsilon_high: float | None = Field(
        None, gt=0, description="grpo: clip range above 1 (DAPO's clip-higher, e.g. 0.28; default epsilon)."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="grpo: divide advantages by the group's reward std, the batch's, or none (Dr. GRPO).",
    )
    reward_weights: list[float] | None = Field(
        None, description="grpo: one weight per reward function (default 1 each)."
    )
    num_iterations: int = Field(
        1, ge=1, description="grpo: optimizer steps per batch of rollouts (reused with importance ratios)."
    )
    mask_truncated_completions: bool = Field(
        False, description="grpo: leave answers cut at max_completion_length (no end token) out of the loss."
    )
    grpo_dynamic_sampling: bool = Field(
        False, description="grpo: leave groups whose rewards are all equal out of the loss (DAPO's filter)."
    )

    @field_validator("reward_weights", mode="before")
    @classmethod
    def _split_weights(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(x) for x in value.replace(",", " ").split()]
        return value


def check_rollout_backend(f: Any) -> None:
    """vLLM rollouts are not built yet: say so before any weights load."""
    if f.rollout_backend == "vllm":
        raise UserError(
            "key 'rollout_backend': vllm is not available in tuneforge yet (colocated vLLM needs a CUDA GPU and "
            "the vllm package, and has not been built and tested here); use engine (the default) or transformers"
        )


@register_stage("grpo", GRPOParams)
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.rewards import load_reward_funcs
    from tuneforge.train.rl import GRPOTrainer
    from tuneforge.train.runner import build_model, number_rows, reference_model, train_and_save

    f = cfg.finetuning
    check_rollout_backend(f)
    rewards = load_reward_funcs(f.reward_funcs, f)  # fail fast
    if f.reward_weights is not None and len(f.reward_weights) != len(rewards):
        raise UserError(
            f"key 'reward_weights': {len(f.reward_weights)} weights for {len(rewards)} reward functions; "
            "give one weight per entry of reward_funcs"
        )
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_prompt_data(cfg.data, tokenizer, seed=cfg.training.seed)
    model = build_model(cfg)
    return train_and_save(
        cfg,
        GRPOTrainer,
        model,
        tokenizer,
        number_rows(data.train),
        data.eval,
        PromptCollator(),
        output_dir,
        resume,
        ref_model=reference_model(cfg) if f.grpo_beta > 0 else None,
        reward_funcs=rewards,
        reward_weights=f.reward_weights,
        loss_args=f,
        num_generations=f.num_generations,
        max_completion_length=f.max_completion_length,
        temperature=f.rollout_temperature,
        rollout_backend=f.rollout_backend,
    )
