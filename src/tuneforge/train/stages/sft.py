"""Supervised fine-tuning: learn to produce the assistant turns of chat data.

Run as: tuneforge train examples/lora_sft.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.data.dataset import build_sft_data
from tuneforge.data.packing import training_rows
from tuneforge.data.visual import ImageCollator, VisionFamily
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.launch import main_process_first
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.runner import number_rows
from tuneforge.train.stages import register_stage
from tuneforge.utils.log import info


@register_stage("pt")
@register_stage("sft")
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.runner import build_model, train_and_save, vision_family
    from tuneforge.train.trainer import TuneforgeTrainer

    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    family = vision_family(cfg, tokenizer)  # None for text-only models
    train_rows, eval_rows, collator = prepare_rows(
        cfg, tokenizer, family
    )  # bad data fails before weights load
    model = build_model(cfg)
    return train_and_save(
        cfg,
        TuneforgeTrainer,
        model,
        tokenizer,
        train_rows,
        eval_rows,
        collator,
        output_dir,
        resume,
        image_processor=family.image_processor if family else None,
    )


def prepare_rows(
    cfg: RunConfig, tokenizer: Any, family: VisionFamily | None = None
) -> tuple[Any, list[dict[str, list[int]]], Any]:
    """Training rows (a list, or a stream with `streaming: true`), evaluation rows and their collator (which
    turns rows' images into pixel tensors for a vision-language model's `family`)."""
    if cfg.data.streaming:
        from tuneforge.data.streaming import StreamingSFTDataset

        t = cfg.training
        stream = StreamingSFTDataset(
            cfg.data, tokenizer, t.per_device_train_batch_size * t.gradient_accumulation_steps
        )
        eval_rows = stream.eval_rows()
        stream.first_rows(8)
        info("streaming the training data")
        return stream, eval_rows, stream.collator(tokenizer.pad_token_id)
    with main_process_first(
        cfg.llamafactory.get("ddp_timeout")
    ):  # rank 0 tokenizes, the others read its cache
        data = build_sft_data(
            cfg.data, tokenizer, seed=cfg.training.seed, stage=cfg.finetuning.stage, family=family
        )
    info(f"{data.summary()}")
    stage = cfg.finetuning.stage
    train_rows, collator = training_rows(data.train, cfg.data, stage, tokenizer.pad_token_id)
    eval_rows, _ = training_rows(data.eval, cfg.data, stage, tokenizer.pad_token_id)
    number_rows(train_rows)
    if len(train_rows) != len(data.train):
        info(f"packed {len(data.train)} rows into {len(train_rows)} sequences")
    if family is not None:
        collator = ImageCollator(collator, family)
    return train_rows, eval_rows, collator
