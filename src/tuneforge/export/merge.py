"""The model an export writes: the base with every adapter merged in, in order, checked before weights load.

LoRA (with DoRA, rsLoRA), OFT and stacked adapters merge through PEFT's `merge_and_unload`; freeze and full
runs are whole models already (their output folder is `model_name_or_path`). Prompt-learning adapters
(prefix, prompt, p_tuning) have nothing to merge: their virtual tokens exist only beside the model.
An adapter trained with QLoRA merges into the float base, never into quantized weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import warn

PROMPT_LEARNING = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")


def adapter_problems(adapters: list[str]) -> list[str]:
    """What stops each adapter folder from being merged, before any weights load."""
    problems = []
    for adapter in adapters:
        config = Path(adapter) / "adapter_config.json"
        if not Path(adapter).is_dir():
            problems.append(f"adapter {adapter} does not exist")
            continue
        if not config.is_file():
            problems.append(f"{adapter} has no adapter_config.json, so it is not an adapter folder")
            continue
        try:
            peft_type = json.loads(config.read_text(encoding="utf-8")).get("peft_type")
        except (ValueError, UnicodeDecodeError, AttributeError) as err:
            problems.append(f"{config} is not valid JSON ({err})")
            continue
        if peft_type in PROMPT_LEARNING:
            problems.append(
                f"{adapter} is a {peft_type.lower()} adapter: its virtual tokens are not weights of the model, so "
                "there is nothing to merge; serve it with `tuneforge serve --adapters` instead of exporting"
            )
    return problems


def trained_with_quantization(adapter: str) -> bool:
    """Whether the run that wrote `adapter` stored its base weights quantized (QLoRA)."""
    run = Path(adapter) / "run.yaml"
    if not run.is_file():
        return False
    import yaml

    try:
        return bool((yaml.safe_load(run.read_text(encoding="utf-8")) or {}).get("quantization_bit"))
    except yaml.YAMLError:
        return False


def merged_model(cfg: RunConfig) -> Any:
    """The base model in float32 with `adapter_name_or_path` merged in order, in eval mode."""
    import torch
    from peft import PeftModel

    from tuneforge.model.loader import load_model

    adapters = list(cfg.model.adapter_name_or_path or [])
    problems = adapter_problems(adapters)
    if problems:
        raise UserError("; ".join(problems))
    if cfg.model.quantization_bit or any(trained_with_quantization(a) for a in adapters):
        warn(
            "the adapter was trained on quantized weights (QLoRA); it is merged into the float base model, so "
            "the export is a float model (quantize it afterwards, e.g. export_format: gguf with q8_0)"
        )
    base_args = cfg.model.model_copy(update={"quantization_bit": None, "adapter_name_or_path": None})
    model = load_model(base_args, dtype=torch.float32)
    if cfg.export.export_device == "auto" and torch.cuda.is_available():
        model = model.to("cuda")
    for adapter in adapters:
        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except RuntimeError as err:  # shapes of another base model
            raise UserError(
                f"adapter {adapter} does not fit {cfg.model.model_name_or_path}: {_first_line(err)}"
            ) from None
    return model.to("cpu").eval()


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
    return lines[0] if lines else str(err).splitlines()[0]
