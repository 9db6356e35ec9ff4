"""GRPO: sample a group of answers per prompt, reward them, make the better-than-average ones likelier.

Run as: tuneforge train examples/grpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.data.preference import PromptCollator, build_prompt_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir


def run(cfg: RunConfig) -> Path:
    from tuneforge.train.rewards import load_reward_funcs
    from tuneforge.train.rl import GRPOTrainer
    from tuneforge.train.runner import build_model, number_rows, reference_model, train_and_save

    f = cfg.finetuning
    rewards = load_reward_funcs(f.reward_funcs, f.reward_format_regex, f.reward_length_target)  # fail fast
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
