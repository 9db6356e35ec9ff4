"""Map tuneforge's training keys onto the Hugging Face TrainingArguments."""

from __future__ import annotations

import dataclasses
import os

import torch
from transformers import TrainingArguments as HFTrainingArguments

from tuneforge.config import RunConfig
from tuneforge.config.llamafactory import llamafactory_keys
from tuneforge.train.parallel import check_sharding
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import warn


def to_hf_arguments(cfg: RunConfig) -> HFTrainingArguments:
    t = cfg.training
    check_sharding(cfg)
    names = {f.name for f in dataclasses.fields(HFTrainingArguments)}
    # transformers 5.x renamed gradient checkpointing to activation checkpointing
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    # `auto` is decided before training (stages.with_checkpointing_decided)
    on = t.gradient_checkpointing is True
    checkpointing = {
        f"{prefix}_checkpointing": on,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if on else None,
    }
    chosen = dict(
        **checkpointing,
        output_dir=t.output_dir,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps if t.warmup_steps > 0 else t.warmup_ratio,
        **low_rank_optimizer(cfg),
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=None,  # rotation is tuneforge's (it never deletes the newest complete checkpoint)
        seed=t.seed,
        data_seed=t.seed,
        **mixed_precision(t.bf16, t.fp16, bool(cfg.llamafactory.get("use_cpu"))),
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=[] if t.report_to == ["none"] else t.report_to,
        remove_unused_columns=False,
        prediction_loss_only=True,  # evaluation reports eval_loss; no logits are kept
        eval_strategy="steps" if cfg.data.val_size > 0 else "no",
        eval_steps=t.save_steps if cfg.data.val_size > 0 else None,
        load_best_model_at_end=bool(t.early_stopping_steps),
        metric_for_best_model="eval_loss" if t.early_stopping_steps else None,
        neftune_noise_alpha=cfg.finetuning.neftune_noise_alpha,
        logging_first_step=True,
        disable_tqdm=False,
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # several CPU processes: transformers treats them as one job only with use_cpu (and gloo)
        chosen.update(use_cpu=True, ddp_backend="gloo")
    # LLaMA-Factory keys that are plain TrainingArguments keys go through as it passes them (the user's
    # eval_strategy, adam_beta2, torch_compile, ... win over tuneforge's choices above).
    passed = llamafactory_keys().trainer
    chosen.update({k: v for k, v in cfg.llamafactory.items() if k in passed and k in names})
    layer = cfg.llamafactory.get("fsdp_transformer_layer_cls_to_wrap")
    if layer and isinstance(chosen.get("fsdp_config"), (dict, type(None))):  # a key transformers 5 moved
        chosen["fsdp_config"] = {"transformer_layer_cls_to_wrap": layer, **(chosen.get("fsdp_config") or {})}
    check_trackers(t.report_to)
    try:
        return HFTrainingArguments(**chosen)
    except (ValueError, TypeError) as err:  # e.g. optim: bogus, eval_strategy without evaluation data
        first = str(err).strip().splitlines()[0][:300]
        raise UserError(f"transformers' TrainingArguments refuse this config: {first}") from None


# report_to names and the package each needs
TRACKERS = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "swanlab": "swanlab", "trackio": "trackio", "clearml": "clearml", "neptune": "neptune",
            "aim": "aim", "dvclive": "dvclive", "codecarbon": "codecarbon"}  # fmt: skip


def check_trackers(report_to: list[str]) -> None:
    """Every tracker in report_to installed, or a sentence naming the package (before any data loads)."""
    import importlib.util

    for name in report_to:
        if name in ("none", "all"):
            continue
        package = TRACKERS.get(name)
        if package is None:
            raise UserError(
                f"report_to: '{name}' is not a tracker transformers knows ({', '.join(TRACKERS)})"
            )
        if importlib.util.find_spec(package) is None:
            raise UserError(f"report_to: {name} needs the {package} package: pip install {package}")


def mixed_precision(bf16: bool, fp16: bool, use_cpu: bool = False) -> dict[str, bool]:
    """`bf16`/`fp16` where the device has them; otherwise a warning and float32 (transformers would stop with
    an error after the data had loaded). On a CPU, bf16 stays only with `use_cpu: true`: it is many times
    slower than float32 on most CPUs."""
    cuda = torch.cuda.is_available()
    if fp16 and not cuda:
        warn("fp16 mixed precision needs a CUDA device; training in float32 instead")
        fp16 = False
    if bf16 and cuda and not torch.cuda.is_bf16_supported():
        warn("bf16 is not supported by this GPU; training in float32 instead (set fp16: true for speed)")
        bf16 = False
    if bf16 and not cuda and not use_cpu:
        warn(
            "bf16 on a CPU is many times slower than float32 here; training in float32 (use_cpu: true keeps bf16)"
        )
        bf16 = False
    return {"bf16": bf16, "fp16": fp16}


def low_rank_optimizer(cfg: RunConfig) -> dict[str, object]:
    """`optim` and, for GaLore/APOLLO, the Trainer's target-module and argument keys."""
    f = cfg.finetuning
    if not (f.use_galore or f.use_apollo):
        return {"optim": cfg.training.optim}
    name = "galore" if f.use_galore else "apollo"
    targets = getattr(f, f"{name}_target")
    rank, interval, scale = (getattr(f, f"{name}_{k}") for k in ("rank", "update_interval", "scale"))
    layerwise = "_layerwise" if (f.use_galore and f.galore_layerwise) else ""
    return {
        "optim": f"{name}_adamw{layerwise}",
        "optim_target_modules": "all-linear" if targets == ["all"] else targets,
        "optim_args": f"rank={rank},update_proj_gap={interval},scale={scale}",
    }
