"""Reward model: a scoring head on the model, trained so that chosen answers outscore rejected ones.

Run as: tuneforge train examples/rm.yaml   (then: tuneforge score --reward_model OUTPUT_DIR ...)
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.data.preference import PairCollator, build_pair_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage


@register_stage("rm")
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.preference import RewardTrainer
    from tuneforge.train.runner import build_model, number_rows, train_and_save

    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    text_only = "reward models are trained on text only; use a text model and drop the images column"
    data = build_pair_data(
        cfg.data, tokenizer, seed=cfg.training.seed, why=text_only
    )  # bad data fails before weights load
    model = build_model(cfg, head="score")
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    return train_and_save(
        cfg,
        RewardTrainer,
        model,
        tokenizer,
        number_rows(data.train),
        data.eval,
        PairCollator(tokenizer.pad_token_id),
        output_dir,
        resume,
    )
