"""Map tuneforge's training keys onto the Hugging Face TrainingArguments."""

from __future__ import annotations

import dataclasses

import torch
from transformers import TrainingArguments as HFTrainingArguments

from tuneforge.config import RunConfig


def to_hf_arguments(cfg: RunConfig) -> HFTrainingArguments:
    t = cfg.training
    names = {f.name for f in dataclasses.fields(HFTrainingArguments)}
    # transformers 5.x renamed gradient checkpointing to activation checkpointing
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    checkpointing = {
        f"{prefix}_checkpointing": t.gradient_checkpointing,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if t.gradient_checkpointing else None,
    }
    return HFTrainingArguments(
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
        optim=t.optim,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.bf16,
        fp16=t.fp16,
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=[] if t.report_to == ["none"] else t.report_to,
        remove_unused_columns=False,
        prediction_loss_only=True,  # evaluation reports eval_loss; no logits are kept
        eval_strategy="steps" if cfg.data.val_size > 0 else "no",
        eval_steps=t.save_steps if cfg.data.val_size > 0 else None,
        logging_first_step=True,
        disable_tqdm=False,
    )
