"""Freeze tuning: train the last (or first) N decoder layers of the model's own parameters, no extra modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from tuneforge.config.plugins import Params
from tuneforge.config.schema import split_names
from tuneforge.model.adapters import register_adapter
from tuneforge.model.vision import is_vision_language, part_of
from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


class FreezeParams(Params):
    freeze_trainable_layers: int = Field(
        2, description="freeze: train the last N layers (negative: the first N)."
    )
    freeze_trainable_modules: list[str] = Field(
        default_factory=lambda: ["all"],
        description="freeze: module names inside the trainable layers, or `all`.",
    )

    _split_freeze_modules = field_validator("freeze_trainable_modules", mode="before")(split_names)


def decoder_layers(model: PreTrainedModel) -> tuple[str, int]:
    """(name of the module list holding the decoder layers, layer count), for any architecture.

    LLaMA-likes call it `model.layers`, GPT-2 `transformer.h`, GPT-NeoX `gpt_neox.layers`: it is the
    first ModuleList as long as `config.num_hidden_layers`.
    """
    import torch

    config = model.config.get_text_config()  # a vision-language model's count is its language model's
    count = getattr(config, "num_hidden_layers", None)
    if not count:
        raise UserError("freeze tuning needs config.num_hidden_layers, which this model does not define")
    vision_language = is_vision_language(model.config)
    for name, module in model.named_modules():
        if vision_language and part_of(model.config.model_type, name) != "language_model":
            continue  # the vision tower's blocks may be as many
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, int(count)
    raise UserError(
        f"could not find the {count} decoder layers of this {type(model).__name__} for freeze tuning"
    )


@register_adapter("freeze", FreezeParams)
def build_freeze(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    container, total = decoder_layers(model)
    n = args.freeze_trainable_layers
    if n == 0 or abs(n) > total:
        raise UserError(f"freeze_trainable_layers must be between -{total} and {total} and not 0 (got {n})")
    layers = range(total - n, total) if n > 0 else range(-n)
    prefixes = tuple(f"{container}.{i}." for i in layers)
    modules = args.freeze_trainable_modules
    for name, param in model.named_parameters():
        inside = name[len(container) + 1 :].split(".", 1)[-1] if name.startswith(prefixes) else None
        wanted = inside is not None and (
            modules == ["all"] or any(inside.startswith(f"{m}.") or f".{m}." in f".{inside}" for m in modules)
        )
        param.requires_grad_(wanted)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"freeze_trainable_modules {modules} matched no parameter in the trainable layers")
    return model
