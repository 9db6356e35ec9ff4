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


def run(cfg: RunConfig) -> Path:
    import torch

    from tuneforge.train.arguments import to_hf_arguments
    from tuneforge.train.callbacks import MetricsJsonlCallback
    from tuneforge.train.trainer import TuneforgeTrainer

    output_dir = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    train_rows, eval_rows, collator = prepare_rows(cfg, tokenizer)  # bad data fails before weights load

    # Master weights stay float32; bf16/fp16 are applied by the Trainer's autocast.
    model = apply_adapter(load_model(cfg.model, dtype=torch.float32), cfg.finetuning, cfg.model)
    if cfg.training.gradient_checkpointing:
        model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    print(
        f"tuneforge: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.3f}%)",
        file=sys.stderr,
    )

    trainer = TuneforgeTrainer(
        model=model,
        args=to_hf_arguments(cfg),
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.add_callback(MetricsJsonlCallback(output_dir / "metrics.jsonl", lambda: trainer.tokens_seen))
    result = trainer.train(resume_from_checkpoint=cfg.training.resume_from_checkpoint)
    trainer.save_model(str(output_dir))
    trainer.save_metrics("train", {**result.metrics, "num_tokens_trained": trainer.tokens_seen})
    trainer.save_state()
    save_run(cfg, output_dir)
    return output_dir


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
    data = build_sft_data(cfg.data, tokenizer, seed=cfg.training.seed)
    print(f"tuneforge: {data.summary()}", file=sys.stderr)
    stage = cfg.finetuning.stage
    train_rows, collator = training_rows(data.train, cfg.data, stage, tokenizer.pad_token_id)
    eval_rows, _ = training_rows(data.eval, cfg.data, stage, tokenizer.pad_token_id)
    if len(train_rows) != len(data.train):
        print(f"tuneforge: packed {len(data.train)} rows into {len(train_rows)} sequences", file=sys.stderr)
    return train_rows, eval_rows, collator
