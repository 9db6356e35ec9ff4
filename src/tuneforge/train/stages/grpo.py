"""GRPO: sample a group of answers per prompt, reward them, make the better-than-average ones likelier.

Run as: tuneforge train examples/grpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params
from tuneforge.config.schema import split_names
from tuneforge.data.preference import PromptCollator, build_prompt_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage
from tuneforge.train.stages.dpo import ReferenceParams


class RolloutParams(Params):
    """How the online stages (grpo, ppo) sample and score answers."""

    reward_funcs: list[str] = Field(
        default_factory=list,
        description="grpo: rewards to add up: exact_match, contains_answer, format, length, module:function "
        "or path/to/file.py:function.",
    )
    max_completion_length: int = Field(128, gt=0, description="grpo/ppo: longest sampled answer, in tokens.")
    rollout_temperature: float = Field(
        1.0, gt=0, description="grpo/ppo: sampling temperature of the answers."
    )

    _split_reward_funcs = field_validator("reward_funcs", mode="before")(split_names)


class GRPOParams(RolloutParams, ReferenceParams):
    num_generations: int = Field(4, ge=2, description="grpo: answers sampled per prompt (the group).")
    grpo_beta: float = Field(0.04, ge=0, description="grpo: weight of the KL penalty towards the reference.")


@register_stage("grpo", GRPOParams)
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.rewards import load_reward_funcs
    from tuneforge.train.rl import GRPOTrainer
    from tuneforge.train.runner import build_model, number_rows, reference_model, train_and_save

    f = cfg.finetuning
    rewards = load_reward_funcs(f.reward_funcs, f)  # fail fast
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
        num_generations=f.num_generations,
        max_completion_length=f.max_completion_length,
        temperature=f.rollout_temperature,
        beta=f.grpo_beta,
    )
