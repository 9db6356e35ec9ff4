"""Supervised fine-tuning: learn to produce the assistant turns of chat data.

Run as: tuneforge train examples/lora_sft.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.data.collator import PaddingCollator
from tuneforge.data.dataset import build_sft_data
from tuneforge.data.packing import training_rows
from tuneforge.model.adapters import apply_adapter, count_parameters
from tuneforge.model.loader import load_model, load_tokenizer
from tuneforge.train.output import prepare_output_dir, save_run
from tuneforge.utils.errors import UserError


def run(cfg: RunConfig) -> Path:
    import torch

    from tuneforge.train.arguments import to_hf_arguments
    from tuneforge.train.callbacks import GracefulStop, MetricsJsonlCallback
    from tuneforge.train.trainer import TuneforgeTrainer

    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    train_rows, eval_rows, collator = prepare_rows(cfg, tokenizer)  # bad data fails before weights load

    # Adapter weights are initialised from the global RNG: seed it so a config always gives the same run.
    from transformers import set_seed

    set_seed(cfg.training.seed)
    # Master weights stay float32; bf16/fp16 are applied by the Trainer's autocast.
    model = load_model(cfg.model, dtype=torch.float32, for_training=True)
    model = apply_adapter(model, cfg.finetuning, cfg.model)
    if cfg.training.gradient_checkpointing:
        model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    print(
        f"tuneforge: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.3f}%)",
        file=sys.stderr,
    )

    metrics_path = output_dir / "metrics.jsonl"
    trainer = TuneforgeTrainer(
        model=model,
        args=to_hf_arguments(cfg),
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=collator,
        processing_class=tokenizer,
        optimizers=build_optimizer(model, cfg),
        save_total_limit=cfg.training.save_total_limit,
        max_nonfinite_steps=cfg.training.max_nonfinite_steps,
        metrics_path=metrics_path,
    )
    trainer.add_callback(MetricsJsonlCallback(metrics_path, lambda: trainer.tokens_seen))
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
    trainer.save_model(str(output_dir))
    trainer.save_metrics("train", {**result.metrics, "num_tokens_trained": trainer.tokens_seen})
    trainer.save_state()
    save_run(cfg, output_dir)
    return output_dir


class TrainingInterrupted(UserError):
    """The run stopped on SIGTERM/SIGINT after writing a checkpoint; exits 128 + the signal number."""

    def __init__(self, signum: int, step: int, output_dir: Path):
        import signal

        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint-{step} is in {output_dir}. "
            "Run the same command again to resume."
        )


def build_optimizer(model: Any, cfg: RunConfig) -> tuple[Any, None]:
    """(optimizer, None) for LoRA+; (None, None) lets the Trainer build the one `optim` names."""
    if cfg.finetuning.loraplus_lr_ratio is None:
        return None, None
    from tuneforge.model.adapters.lora import loraplus_optimizer

    return loraplus_optimizer(model, cfg.finetuning, cfg.training), None


def prepare_rows(cfg: RunConfig, tokenizer: Any) -> tuple[Any, list[dict[str, list[int]]], PaddingCollator]:
    """Training rows (a list, or a stream with `streaming: true`), evaluation rows and their collator."""
    if cfg.data.streaming:
        from tuneforge.data.streaming import StreamingSFTDataset

        t = cfg.training
        stream = StreamingSFTDataset(
            cfg.data, tokenizer, t.per_device_train_batch_size * t.gradient_accumulation_steps
        )
        stream.first_rows(8)
        print("tuneforge: streaming the training data", file=sys.stderr)
        return stream, [], PaddingCollator(tokenizer.pad_token_id)
    data = build_sft_data(cfg.data, tokenizer, seed=cfg.training.seed, stage=cfg.finetuning.stage)
    print(f"tuneforge: {data.summary()}", file=sys.stderr)
    stage = cfg.finetuning.stage
    train_rows, collator = training_rows(data.train, cfg.data, stage, tokenizer.pad_token_id)
    eval_rows, _ = training_rows(data.eval, cfg.data, stage, tokenizer.pad_token_id)
    for i, row in enumerate(train_rows):
        row["sample_id"] = i  # named in the numerics guard's report of a skipped step
    if len(train_rows) != len(data.train):
        print(f"tuneforge: packed {len(data.train)} rows into {len(train_rows)} sequences", file=sys.stderr)
    return train_rows, eval_rows, collator
