"""What every stage does around its own data and loss: build the model with its method, train with
checkpoints, signals and metrics, save. A stage's `run(cfg)` reads: output dir, data, model, train."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.data.table import ExampleRows
from tuneforge.model.adapters import apply_adapter, count_parameters
from tuneforge.model.loader import load_model
from tuneforge.train.checkpoint import Checkpoint
from tuneforge.train.output import mark_finished, save_run
from tuneforge.utils.allocator import in_use as allocator_in_use
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import info, warnings_given


class TrainingInterrupted(UserError):
    """The run stopped on SIGTERM/SIGINT after writing a checkpoint; exits 128 + the signal number."""

    def __init__(self, signum: int, step: int, output_dir: Path):
        import signal

        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint-{step} is in {output_dir}. "
            "Run the same command again to resume."
        )


def build_model(cfg: RunConfig, head: str = "lm") -> Any:
    """The model to train: seeded, float32 master weights, the configured method applied.

    `head="score"` gives a sequence-scoring head (reward models) instead of the LM head.
    """
    import torch
    from transformers import set_seed

    # Adapter weights are initialised from the global RNG: seed it so a config always gives the same run.
    set_seed(cfg.training.seed)
    with partitioned_loading(cfg):  # bf16/fp16 are applied by the Trainer's autocast
        model = load_model(cfg.model, dtype=torch.float32, for_training=True, head=head)
    model = apply_adapter(model, cfg.finetuning, cfg.model)
    fused = fuse_lora(model, cfg)
    if cfg.training.gradient_checkpointing is True:
        model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    info(f"training {trainable:,} of {total:,} parameters ({100 * trainable / total:.3f}%)")
    info(
        f"memory allocator: {allocator_in_use()}, attention: {getattr(model.config, '_attn_implementation', None)}"
        + (f", fused LoRA layers: {fused}" if fused else "")
    )
    return model


def fuse_lora(model: Any, cfg: RunConfig) -> int:
    """With `fused_lora` (the default), PEFT's plain LoRA layers run as one autograd node each
    (`model/fused_lora.py`); not under ZeRO-3 or FSDP, which gather and free weights around each layer. Returns
    how many layers run fused."""
    from tuneforge.train.parallel import zero_settings

    if not cfg.training.fused_lora or not hasattr(model, "peft_config") or zero_settings(cfg)[0] == 3:
        return 0
    from tuneforge.model import fused_lora

    return fused_lora.install(model)


@contextmanager
def partitioned_loading(cfg: RunConfig) -> Iterator[None]:
    """Under DeepSpeed ZeRO-3, weights loaded in this block go straight into each process's partition
    (transformers uses deepspeed.zero.Init while the Trainer's DeepSpeed arguments exist) instead of a whole
    copy per process; otherwise it does nothing."""
    from tuneforge.train.parallel import zero_settings

    if not cfg.llamafactory.get("deepspeed") or zero_settings(cfg)[0] != 3:
        yield
        return
    import deepspeed

    from tuneforge.train.arguments import to_hf_arguments

    deepspeed.init_distributed()  # joins the process group already started (gloo on CPU)
    with warnings_given():  # run_stage checked this config and warned
        arguments = to_hf_arguments(cfg)  # registers the config zero.Init reads, for as long as it lives
    yield
    del arguments


def build_optimizer(model: Any, cfg: RunConfig) -> tuple[Any, None]:
    """(optimizer, None) for LoRA+; (None, None) lets the Trainer build the one `optim` names."""
    if cfg.finetuning.loraplus_lr_ratio is None:
        return None, None
    from tuneforge.model.adapters.lora import loraplus_optimizer

    return loraplus_optimizer(model, cfg.finetuning, cfg.training), None


def train_and_save(
    cfg: RunConfig,
    trainer_class: type,
    model: Any,
    tokenizer: Any,
    train_rows: Any,
    eval_rows: Any,
    collator: Any,
    output_dir: Path,
    resume: Checkpoint | None,
    image_processor: Any = None,
    **trainer_options: Any,
) -> Path:
    """Train with tuneforge's checkpoints, numerics guard, metrics.jsonl and signal handling; save the result
    (with a vision-language model's image processor, so the folder loads as that model)."""
    from tuneforge.train.arguments import to_hf_arguments
    from tuneforge.train.callbacks import GracefulStop, MetricsJsonlCallback
    from tuneforge.train.recompute import CheckpointingPolicy

    metrics_path = output_dir / "metrics.jsonl"
    pissa = getattr(cfg.finetuning, "pissa_init", False) and hasattr(model, "peft_config")
    if pissa:
        save_pissa_start(model, output_dir, main=int(os.environ.get("RANK", "0")) == 0)
    with warnings_given():  # run_stage checked this config and warned
        arguments = to_hf_arguments(cfg)
    trainer = trainer_class(
        model=model,
        args=arguments,
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=collator,
        processing_class=tokenizer,
        optimizers=build_optimizer(model, cfg),
        save_total_limit=cfg.training.save_total_limit,
        max_nonfinite_steps=cfg.training.max_nonfinite_steps,
        metrics_path=metrics_path,
        chunked_cross_entropy=cfg.training.chunked_cross_entropy,
        merge_micro_batches=cfg.training.merge_micro_batches,
        merge_budget=cfg.training.per_device_train_batch_size * cfg.data.cutoff_len,
        **trainer_options,
    )
    trainer.add_callback(MetricsJsonlCallback(metrics_path, lambda: trainer.tokens_seen))
    if cfg.training.gradient_checkpointing is True:
        trainer.add_callback(CheckpointingPolicy(cfg))
    if cfg.training.early_stopping_steps:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_steps))
    if resume is not None:
        trainer.restore_own_state(resume.path)
    with GracefulStop() as stop:
        trainer.add_callback(stop)
        result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum, trainer.state.global_step, output_dir)
    step = trainer.state.global_step
    if eval_rows and not any("eval_loss" in h and h.get("step") == step for h in trainer.state.log_history):
        trainer.evaluate()  # the final model is always evaluated (metrics.jsonl, trainer_state.json)
    trainer.save_model(str(output_dir))
    main = trainer.is_world_process_zero()  # with several processes one writes what the run writes once
    if pissa and main:
        convert_pissa(model, output_dir)
    # the model FLOPs of this process's training passes (train/flops.py)
    meter = getattr(trainer, "_meter", None)
    flops = {"model_flops": meter.total} if meter is not None else {}
    trainer.save_metrics("train", {**result.metrics, "num_tokens_trained": trainer.tokens_seen, **flops})
    trainer.save_state()
    if main:
        if image_processor is not None:
            image_processor.save_pretrained(str(output_dir))
        save_run(cfg, output_dir)
        mark_finished(cfg, output_dir, step)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def save_pissa_start(model: Any, output_dir: Path, main: bool = True) -> None:
    """PiSSA trains on a residual base (the weight minus its principal part, which starts in the adapter):
    keep the starting adapter (once; a resumed run keeps the first) so the result can be rewritten for the
    original base."""
    start = output_dir / "pissa_init"
    model.peft_config["default"].init_lora_weights = True  # the saved adapters load as plain LoRA
    if main and not (start / "adapter_config.json").is_file():
        model.save_pretrained(str(start))


def convert_pissa(model: Any, output_dir: Path) -> None:
    """Rewrite the final PiSSA adapter as a LoRA (twice the rank) for the original base model, so chat, serve,
    export and LLaMA-Factory load it on the model everyone has (LLaMA-Factory's pissa_convert, always on)."""
    model.save_pretrained(
        str(output_dir), path_initial_model_for_weight_conversion=str(output_dir / "pissa_init")
    )
    info(f"PiSSA adapter rewritten for the original base model in {output_dir} (the start is in pissa_init/)")


def vision_family(cfg: RunConfig, tokenizer: Any) -> Any:
    """The image facts of a vision-language model (`tuneforge.data.visual`), None for a text-only model."""
    from tuneforge.inference.loading import image_facts

    return image_facts(cfg.model, tokenizer, cfg.data)


def number_rows(rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """Give each training row its index, named by the numerics guard when a step is skipped (rows
    built on reading, `ExampleRows`, carry theirs already)."""
    if isinstance(rows, ExampleRows):
        return rows
    for i, row in enumerate(rows):
        row["sample_id"] = i
    return rows


def reference_model(cfg: RunConfig) -> Any:
    """The frozen reference policy, or None when the trained model can serve as its own (adapters off)."""
    from tuneforge.model.adapters import is_peft

    f = cfg.finetuning
    if f.ref_model is None and is_peft(f.finetuning_type):
        return None
    args = (
        cfg.model
        if f.ref_model is None
        else cfg.model.model_copy(update={"model_name_or_path": f.ref_model, "adapter_name_or_path": None})
    )
    why = (
        f"ref_model {f.ref_model}"
        if f.ref_model
        else f"a frozen copy of the model ({f.finetuning_type} tuning has no adapters to switch off)"
    )
    info(f"reference policy: {why}")
    model = load_model(args)
    if args.adapter_name_or_path:
        from peft import PeftModel

        for path in args.adapter_name_or_path:
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
    model.eval().requires_grad_(False)
    return model
