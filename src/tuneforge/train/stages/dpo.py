"""Direct preference optimisation and its variants (pref_loss: sigmoid, ipo, hinge, orpo, simpo).

Run as: tuneforge train examples/dpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.data.preference import PairCollator, build_pair_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir


def run(cfg: RunConfig) -> Path:
    from tuneforge.train.preference import REFERENCE_FREE, DPOTrainer
    from tuneforge.train.runner import build_model, number_rows, reference_model, train_and_save

    f = cfg.finetuning
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_pair_data(cfg.data, tokenizer, seed=cfg.training.seed)  # bad data fails before weights load
    model = build_model(cfg)
    ref = None if f.pref_loss in REFERENCE_FREE else reference_model(cfg)
    return train_and_save(
        cfg,
        DPOTrainer,
        model,
        tokenizer,
        number_rows(data.train),
        data.eval,
        PairCollator(tokenizer.pad_token_id),
        output_dir,
        resume,
        ref_model=ref,
        beta=f.pref_beta,
        kind=f.pref_loss,
        ftx=f.pref_ftx,
        label_smoothing=f.dpo_label_smoothing,
        simpo_gamma=f.simpo_gamma,
    )
