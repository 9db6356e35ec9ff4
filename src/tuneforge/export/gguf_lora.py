"""A LoRA adapter as a GGUF adapter file for llama.cpp (`--lora FILE` on top of the base model's GGUF).

From the GGUF specification and llama.cpp's adapter loader contract: `general.type = adapter`,
`adapter.type = lora`, `adapter.lora.alpha`, and for each adapted weight `NAME.lora_a` `[rank, in]` and
`NAME.lora_b` `[out, rank]` under the base tensor's llama.cpp name. llama.cpp adds
`alpha / rank * B @ A`, so rsLoRA's `alpha / sqrt(rank)` is written as alpha `alpha * sqrt(rank)`; the rows
of B for the query and key projections are interleaved as the base export interleaves them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tuneforge.export.gguf_writer import ARCHITECTURES, _interleave_heads, gguf_name
from tuneforge.utils.errors import UserError


def lora_problems(adapters: list[str]) -> list[str]:
    """What keeps these adapters from being one llama.cpp LoRA file, before anything loads."""
    if len(adapters) != 1:
        return [
            f"export_format: gguf_lora writes one adapter; {len(adapters)} are given (export each alone, or "
            "merge them with export_format: gguf)"
        ]
    config = json.loads((Path(adapters[0]) / "adapter_config.json").read_text(encoding="utf-8"))
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(
            f"{adapters[0]} is a {config.get('peft_type')} adapter; llama.cpp's --lora takes LoRA only"
        )
    for key, meaning in (
        ("use_dora", "DoRA's magnitude vectors"),
        ("modules_to_save", "fully trained modules (modules_to_save)"),
        ("rank_pattern", "per-module ranks (rank_pattern)"),
        ("alpha_pattern", "per-module alphas (alpha_pattern)"),
    ):
        if config.get(key):
            problems.append(
                f"{adapters[0]} has {meaning}, which a llama.cpp LoRA file cannot hold; use export_format: gguf "
                "(merged) instead"
            )
    return problems


def write_gguf_lora(model_config: Any, adapter: Path, path: Path, gguf_type: str, name: str) -> None:
    """Write the LoRA in `adapter` (for a base with `model_config`) to `path` as f32 or f16 tensors."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    arch, interleave = ARCHITECTURES.get(model_config.model_type, (None, False))
    if arch is None:
        raise UserError(
            f"the GGUF export writes {', '.join(sorted(ARCHITECTURES))} models; this is {model_config.model_type}"
        )
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)  # llama.cpp scales by alpha / rank
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    tied = bool(getattr(model_config, "tie_word_embeddings", False))
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    dtype = np.float16 if gguf_type == "f16" else np.float32
    written = 0
    for key in sorted(weights):
        if ".lora_A." not in key:
            continue
        base = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        target = gguf_name(base)
        if target is None or (tied and target == "output.weight"):
            raise UserError(f"{adapter}: llama.cpp has no adapted tensor for {base}; export with format gguf")
        a = weights[key].float()
        b = weights[key.replace(".lora_A.", ".lora_B.")].float()
        if interleave and target.endswith("attn_q.weight"):
            b = _interleave_heads(b, heads)
        elif interleave and target.endswith("attn_k.weight"):
            b = _interleave_heads(b, kv_heads)
        writer.add_tensor(f"{target}.lora_a", a.numpy().astype(dtype))
        writer.add_tensor(f"{target}.lora_b", b.numpy().astype(dtype))
        written += 1
    if not written:
        raise UserError(f"{adapter} holds no LoRA weights (adapter_model.safetensors has no lora_A tensors)")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
