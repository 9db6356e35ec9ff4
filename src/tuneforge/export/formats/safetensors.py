"""`export_format: safetensors`: a Hugging Face model folder: sharded safetensors with an index, config.json,
generation_config.json, the tokenizer with the run's chat template. transformers, vLLM, SGLang and Ollama
(`FROM .`) load it as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.export import ExportChat, register_format
from tuneforge.utils.log import warn


@register_format("safetensors")
def write(cfg: RunConfig, model: Any, tokenizer: Any, chat: ExportChat, folder: Path) -> str:
    from tuneforge.export.card import generation_config

    legacy = cfg.export.export_legacy_format
    if legacy:
        warn(
            "export_legacy_format writes pickled .bin weights, which run code when loaded; prefer safetensors"
        )
    model.save_pretrained(folder, max_shard_size=f"{cfg.export.export_size}GB", safe_serialization=not legacy)
    if chat.jinja is not None:
        tokenizer.chat_template = chat.jinja
    tokenizer.save_pretrained(folder)
    config = generation_config(cfg, tokenizer, chat.stop_ids)
    (folder / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return "."
