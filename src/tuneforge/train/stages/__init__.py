"""Training stages as a registry: `stage: NAME` runs the module registered under NAME."""

from __future__ import annotations

import importlib
from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.utils.errors import UserError

# pt is sft on raw text: the `text` format makes every token a label, and packing is on by default.
_STAGES = {
    "pt": "tuneforge.train.stages.sft",
    "sft": "tuneforge.train.stages.sft",
    "rm": "tuneforge.train.stages.rm",
    "dpo": "tuneforge.train.stages.dpo",
    "kto": "tuneforge.train.stages.kto",
    "grpo": "tuneforge.train.stages.grpo",
    "ppo": "tuneforge.train.stages.ppo",
}


def available_stages() -> list[str]:
    return sorted(_STAGES)


def run_stage(cfg: RunConfig) -> Path:
    """Run the configured stage; returns the output directory."""
    stage = cfg.finetuning.stage
    if stage not in _STAGES:
        raise UserError(
            f"stage '{stage}' is not available in this version of tuneforge; available: {', '.join(available_stages())}"
        )
    from tuneforge.model.loader import with_local_adapters
    from tuneforge.train.arguments import to_hf_arguments

    to_hf_arguments(cfg)  # optimizer, trackers, strategies: refused in a sentence before data or weights load
    cfg = cfg.model_copy(update={"model": with_local_adapters(cfg.model)})  # hub ids -> downloaded folders
    try:
        return importlib.import_module(_STAGES[stage]).run(cfg)
    except OSError as err:  # the disk filled up or turned read-only mid-run: say what was kept, exit 1
        from tuneforge.train.output import write_fault

        fault = write_fault(err, Path(cfg.training.output_dir))
        if fault is None:
            raise
        raise fault from None
