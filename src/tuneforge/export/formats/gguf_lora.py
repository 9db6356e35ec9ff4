"""`export_format: gguf_lora`: the run's LoRA adapter alone, as a GGUF adapter file for llama.cpp's `--lora`
(and Ollama's ADAPTER), to put on the base model's own GGUF; nothing is merged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params
from tuneforge.export import ExportChat, register_format
from tuneforge.export.gguf_lora import lora_problems


class GGUFLoraParams(Params):
    export_lora_type: Literal["f32", "f16"] = Field(
        "f32", description="gguf_lora: type of the adapter's tensors (f32 or f16)."
    )


# nothing merged: only the base's config and the adapter's weights are read
@register_format("gguf_lora", GGUFLoraParams, merged=False, check=lora_problems)
def write(cfg: RunConfig, model: Any, tokenizer: Any, chat: ExportChat, folder: Path) -> tuple[str, str]:
    from transformers import AutoConfig

    from tuneforge.export.gguf_lora import write_gguf_lora

    adapter = Path(list(cfg.model.adapter_name_or_path or [])[0])
    config = AutoConfig.from_pretrained(
        cfg.model.model_name_or_path, trust_remote_code=cfg.model.trust_remote_code
    )
    name = Path(cfg.export.export_dir or "adapter").name
    filename = f"{name}-lora-{cfg.export.export_lora_type}.gguf"
    write_gguf_lora(config, adapter, folder / filename, cfg.export.export_lora_type, name)
    return str(Path(cfg.model.model_name_or_path).expanduser().resolve()), f"./{filename}"
