"""Vision-language models: which parameters are the vision tower, the projector and the language model,
and which of them train (`freeze_vision_tower`, `freeze_multi_modal_projector`, `freeze_language_model`,
LLaMA-Factory's keys and defaults: only the language model trains unless told otherwise)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments

PARTS = ("projector", "vision_tower", "language_model")


@cache
def _table() -> dict[str, dict[str, list[str]]]:
    import yaml

    return yaml.safe_load(resources.files("tuneforge.model").joinpath("vision_parts.yaml").read_text())


def is_vision_language(config: Any) -> bool:
    """Whether a model config describes a multimodal model: image-text-to-text (it has a vision encoder's
    config) or audio-text-to-text (an audio encoder's)."""
    return is_audio_language(config) or getattr(config, "vision_config", None) is not None


def is_audio_language(config: Any) -> bool:
    return getattr(config, "audio_config", None) is not None


def supported_vision_models() -> list[str]:
    return sorted(_table())


def check_vision_model(config: Any) -> None:
    """Refuse, in a sentence, a vision-language architecture whose parts tuneforge does not know."""
    if is_vision_language(config) and config.model_type not in _table():
        architecture = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise UserError(
            f"{architecture} (model type '{config.model_type}') is a multimodal model tuneforge does not train "
            f"yet; supported: {', '.join(supported_vision_models())}"
        )


def part_of(model_type: str, name: str) -> str:
    """Which part a parameter or module name (e.g. `model.visual.blocks.0.attn.qkv`) belongs to."""
    dotted = f".{name}."
    for part in PARTS:
        if any(f".{prefix}." in dotted for prefix in _table()[model_type][part]):
            return part
    return "language_model"


def frozen_parts(args: FinetuningArguments) -> set[str]:
    flags = {
        "vision_tower": args.freeze_vision_tower,
        "projector": args.freeze_multi_modal_projector,
        "language_model": args.freeze_language_model,
    }
    return {part for part, frozen in flags.items() if frozen}


def freeze_parts(model: PreTrainedModel, args: FinetuningArguments, method_decides: bool) -> None:
    """Frozen parts never train; with `method_decides` false (freeze tuning), unfrozen vision parts train whole
    besides the language layers the method chose. A no-op for text-only models."""
    if not is_vision_language(model.config):
        return
    frozen = frozen_parts(args)
    for name, param in model.named_parameters():
        part = part_of(model.config.model_type, name)
        if part in frozen:
            param.requires_grad_(False)
        elif part != "language_model" and not method_decides:
            param.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(
            "freeze_vision_tower, freeze_multi_modal_projector and freeze_language_model leave nothing to train; "
            "unfreeze at least one part"
        )


def lora_pattern(model: PreTrainedModel, targets: list[str], args: FinetuningArguments) -> str:
    """PEFT `target_modules` as one full-match pattern: linear layers with these last names, only in unfrozen
    parts (a vision tower's patch embedding may share a name like `proj` with its linear layers)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    frozen = frozen_parts(args)
    model_type = model.config.model_type
    allowed = sorted(
        {
            re.escape(name)
            for name, module in model.named_modules()
            if name.rsplit(".", 1)[-1] in targets
            and isinstance(module, (torch.nn.Linear, Conv1D))
            and part_of(model_type, name) not in frozen
        }
    )
    if not allowed:
        raise UserError(
            f"lora_target {','.join(targets)} matches no layer in the parts that train (frozen: "
            f"{', '.join(sorted(frozen))}); unfreeze a part or name other layers"
        )
    return "^(?:" + "|".join(allowed) + ")$"
