"""`export_format: gguf`: one .gguf file (weights in export_gguf_type, tokenizer, chat template) that
llama.cpp, Ollama and transformers' GGUF loader read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tuneforge.config import RunConfig
from tuneforge.config.plugins import Params
from tuneforge.export import ExportChat, register_format


class GGUFParams(Params):
    export_gguf_type: Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"] = Field(
        "f16",
        description="gguf: weight type: f32, f16, bf16, q8_0, q4_0 or q4_1 (8/4-bit blocks of 32; norms stay f32).",
    )


@register_format("gguf", GGUFParams)
def write(cfg: RunConfig, model: Any, tokenizer: Any, chat: ExportChat, folder: Path) -> str:
    from tuneforge.export.gguf_writer import write_gguf

    name = Path(cfg.export.export_dir or "model").name
    filename = f"{name}-{cfg.export.export_gguf_type}.gguf"
    write_gguf(model, tokenizer, chat.jinja, folder / filename, cfg.export.export_gguf_type, name)
    return f"./{filename}"
