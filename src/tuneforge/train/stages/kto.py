"""Kahneman-Tversky optimisation: learn from answers marked desirable or undesirable, no pairs needed.

Run as: tuneforge train examples/kto.yaml
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tuneforge.config import RunConfig
from tuneforge.data.preference import KTOCollator, build_kto_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage
from tuneforge.train.stages.dpo import BetaParams


class KTOParams(BetaParams):
    kto_chosen_weight: float = Field(1.0, gt=0, description="kto: weight of desirable examples.")
    kto_rejected_weight: float = Field(1.0, gt=0, description="kto: weight of undesirable examples.")


@register_stage("kto", KTOParams)
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.preference import KTOTrainer
    from tuneforge.train.runner import build_model, number_rows, reference_model, train_and_save

    f = cfg.finetuning
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_kto_data(cfg.data, tokenizer, seed=cfg.training.seed)  # bad data fails before weights load
    model = build_model(cfg)
    return train_and_save(
        cfg,
        KTOTrainer,
        model,
        tokenizer,
        number_rows(data.train),
        data.eval,
        KTOCollator(tokenizer.pad_token_id),
        output_dir,
        resume,
        ref_model=reference_model(cfg),
        beta=f.pref_beta,
        desirable_weight=f.kto_chosen_weight,
        undesirable_weight=f.kto_rejected_weight,
    )
