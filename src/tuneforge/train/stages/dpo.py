"""Direct preference optimisation and its variants (pref_loss: sigmoid, ipo, hinge, orpo, simpo).

Run as: tuneforge train examples/dpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params
from tuneforge.data.preference import PairCollator, build_pair_data
from tuneforge.data.visual import ImageCollator
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage


class ReferenceParams(Params):
    """The reference policy of the stages that pull towards one (dpo, kto, grpo)."""

    ref_model: str | None = Field(
        None,
        description="dpo/kto: reference model (default: the trained model with adapters off, or a frozen copy).",
        json_schema_extra={"path": "maybe"},
    )


class BetaParams(ReferenceParams):
    pref_beta: float = Field(
        0.1, gt=0, description="dpo/kto: strength of the pull towards the reference (beta)."
    )


class DPOParams(BetaParams):
    pref_loss: str = Field(
        "sigmoid",
        description="dpo: the loss (tuneforge/train/pref_losses/): sigmoid (DPO), ipo, hinge, or the reference-free orpo and simpo.",
    )
    pref_ftx: float = Field(0.0, ge=0, description="dpo: weight of an extra SFT loss on the chosen answers.")


@register_stage("dpo", DPOParams)
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.pref_losses import needs_reference
    from tuneforge.train.preference import DPOTrainer
    from tuneforge.train.runner import (
        build_model,
        number_rows,
        reference_model,
        train_and_save,
        vision_family,
    )

    f = cfg.finetuning
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    family = vision_family(cfg, tokenizer)  # None for text-only models
    # bad data fails before weights load
    data = build_pair_data(cfg.data, tokenizer, seed=cfg.training.seed, family=family)
    collator = PairCollator(tokenizer.pad_token_id)
    model = build_model(cfg)
    ref = reference_model(cfg) if needs_reference(f.pref_loss) else None
    return train_and_save(
        cfg,
        DPOTrainer,
        model,
        tokenizer,
        number_rows(data.train),
        data.eval,
        collator if family is None else ImageCollator(collator, family, copies=2),
        output_dir,
        resume,
        image_processor=family.image_processor if family else None,
        ref_model=ref,
        finetuning=f,
    )
