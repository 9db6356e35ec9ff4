"""Training stages as plug-ins: `stage: NAME` runs the member registered under NAME.

A stage file declares the keys it reads (a `Params` model) and registers its `run(cfg) -> Path` with
`register_stage`; the folder is discovered, so a new stage is a new file (`dpo.py` is the one to copy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params, family
from tuneforge.utils.errors import UserError

STAGES = family("stage")
StageRun = Callable[[RunConfig], Path]


def register_stage(
    name: str, params: type[Params] | None = None, **traits: Any
) -> Callable[[StageRun], StageRun]:
    return STAGES.register(name, params, **traits)


def available_stages() -> list[str]:
    return sorted(STAGES.members())


def with_checkpointing_decided(cfg: RunConfig) -> RunConfig:
    """`gradient_checkpointing: auto` made true or false by the memory estimate (on only when the run would not
    fit the free memory without it); an estimate that cannot be made leaves it off."""
    if cfg.training.gradient_checkpointing != "auto":
        return cfg
    if cfg.llamafactory.get("disable_gradient_checkpointing") is True:  # LLaMA-Factory's way of saying off
        return cfg.model_copy(
            update={"training": cfg.training.model_copy(update={"gradient_checkpointing": False})}
        )
    import os

    import torch

    from tuneforge.train.estimate import estimate
    from tuneforge.utils.log import info

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        decided = estimate(cfg, int(os.environ.get("WORLD_SIZE") or 1), device)
        on, why = decided.checkpointing, decided.assumptions[-1]
    except Exception as err:  # an architecture the meta-device estimate cannot build
        on, why = False, f"gradient checkpointing: auto leaves it off (no estimate: {err})"
    if on:
        info(why)
    training = cfg.training.model_copy(update={"gradient_checkpointing": on})
    return cfg.model_copy(update={"training": training})


def run_stage(cfg: RunConfig) -> Path:
    """Run the configured stage; returns the output directory."""
    stage = cfg.finetuning.stage
    if stage not in STAGES.members():
        raise UserError(
            f"stage '{stage}' is not available in this version of tuneforge; available: {', '.join(available_stages())}"
        )
    from tuneforge.model.loader import with_local_adapters
    from tuneforge.train.arguments import to_hf_arguments

    to_hf_arguments(cfg)  # optimizer, trackers, strategies: refused in a sentence before data or weights load
    cfg = cfg.model_copy(update={"model": with_local_adapters(cfg.model)})  # hub ids -> downloaded folders
    cfg = with_checkpointing_decided(cfg)
    try:
        return STAGES.get(stage).target(cfg)
    except OSError as err:  # the disk filled up or turned read-only mid-run: say what was kept, exit 1
        from tuneforge.train.output import write_fault

        fault = write_fault(err, Path(cfg.training.output_dir))
        if fault is None:
            raise
        raise fault from None
