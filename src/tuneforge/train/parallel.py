"""Sharded data parallelism on the engines users already run: DeepSpeed ZeRO (`deepspeed: ds_z3_config.json`,
as LLaMA-Factory names it) and FSDP (transformers' `fsdp`/`fsdp_config` keys, or `accelerate launch
--config_file fsdp2.yaml`, which sets accelerate's FSDP variables). tuneforge hands both to transformers'
Trainer unchanged (it fills DeepSpeed's "auto" values from the run); this module checks them before any data
loads and tells the memory estimate how the states are divided.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import warn

SHIPPED = (
    "examples/deepspeed"  # tuneforge's copies of LLaMA-Factory's ds_z{0,2,2_offload,3,3_offload}_config.json
)


def read_deepspeed(path: str) -> dict[str, Any]:
    """The DeepSpeed config at `path` (relative paths from the current folder, as the Trainer reads them)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(
            f"key 'deepspeed': {path} does not exist (relative paths are read from {Path.cwd()}); "
            f"ready-made ZeRO configs are in tuneforge's {SHIPPED}/"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"key 'deepspeed': {path} cannot be read as JSON ({err})") from None
    stage = data.get("zero_optimization", {}).get("stage", 0) if isinstance(data, dict) else None
    if stage not in (0, 1, 2, 3):
        raise UserError(
            f"key 'deepspeed': {path} needs zero_optimization.stage 0, 1, 2 or 3 (found {stage!r})"
        )
    return data


def fsdp_enabled(cfg: RunConfig) -> bool:
    """FSDP through the Trainer's `fsdp` key or an `accelerate launch` FSDP config."""
    fsdp = cfg.llamafactory.get("fsdp")
    return bool(fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def zero_settings(cfg: RunConfig, deepspeed: str | None = None) -> tuple[int, bool, bool]:
    """(ZeRO stage, optimizer states offloaded, weights offloaded) of the run; FSDP counts as stage 3."""
    path = deepspeed or cfg.llamafactory.get("deepspeed")
    if path:
        zero = read_deepspeed(str(path)).get("zero_optimization", {})
        offloaded = lambda key: (zero.get(key) or {}).get("device", "none") in ("cpu", "nvme")  # noqa: E731
        return int(zero.get("stage", 0)), offloaded("offload_optimizer"), offloaded("offload_param")
    if fsdp_enabled(cfg):
        offload = "offload" in str(cfg.llamafactory.get("fsdp")) or str(
            os.environ.get("FSDP_OFFLOAD_PARAMS", "")
        ).lower() in ("1", "true")
        return 3, offload, offload
    return 0, False, False


def sharding_problems(cfg: RunConfig, launching: bool = False) -> list[str]:
    """What stops this run's DeepSpeed/FSDP settings, in sentences (empty when they are fine or absent).
    `launching`: checked by the process that starts the launcher, not by one that trains."""
    deepspeed = cfg.llamafactory.get("deepspeed")
    fsdp = fsdp_enabled(cfg)
    problems = []
    if deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            problems.append(
                "key 'deepspeed': DeepSpeed is not installed: pip install deepspeed (on a machine without a "
                "GPU it runs on its CPU accelerator with gloo)"
            )
        try:
            read_deepspeed(str(deepspeed))
        except UserError as err:
            problems.append(str(err))
        if fsdp:
            problems.append("key 'deepspeed': choose DeepSpeed or FSDP, not both")
        if os.environ.get("WORLD_SIZE") is None and not launching:
            problems.append(
                "key 'deepspeed': DeepSpeed runs its processes under a launcher; start the run with "
                "`tuneforge train` (it starts torchrun itself, one process per device) or torchrun"
            )
    if (deepspeed or fsdp) and (cfg.finetuning.use_galore or cfg.finetuning.use_apollo):
        problems.append(
            "key 'use_galore'/'use_apollo': these optimizers update whole layers in one process; "
            "they do not run under DeepSpeed or FSDP (remove deepspeed/fsdp or the optimizer)"
        )
    if fsdp and cfg.finetuning.loraplus_lr_ratio is not None:
        problems.append(
            "key 'loraplus_lr_ratio': LoRA+ builds its own optimizer, which FSDP does not accept; "
            "use DeepSpeed or plain data parallelism for LoRA+"
        )
    if (deepspeed or fsdp) and cfg.finetuning.stage == "ppo":
        problems.append(
            "key 'stage': ppo switches adapters on one shared base between rollout, reference and reward; "
            "run it with plain data parallelism (no deepspeed/fsdp)"
        )
    f = cfg.finetuning
    shared_judge = getattr(f, "reward_model", None) and getattr(f, "reward_model_type", "lora") == "lora"
    if (deepspeed or fsdp) and f.stage == "online_dpo" and shared_judge:
        problems.append(
            "key 'reward_model': online_dpo with a LoRA reward model switches adapters on one shared base; "
            "run it with plain data parallelism (no deepspeed/fsdp), or use reward_model_type: full or reward_funcs"
        )
    return problems


def check_sharding(cfg: RunConfig, launching: bool = False) -> None:
    """DeepSpeed/FSDP settings that cannot run, refused in one error naming each key (`launching`: in the
    process that starts torchrun or Ray, before any process starts; it imports neither torch nor transformers,
    which the training processes import themselves)."""
    problems = sharding_problems(cfg, launching)
    if problems:
        raise UserError("\n".join(problems))
    if fsdp_enabled(cfg) and not launching and int(os.environ.get("RANK", "0")) == 0:
        import torch

        if not torch.cuda.is_available():
            warn(
                "fsdp: accelerate shards with FSDP on GPUs only; these CPU processes train as plain data "
                "parallelism (the same result, every process holding whole weights)"
            )
