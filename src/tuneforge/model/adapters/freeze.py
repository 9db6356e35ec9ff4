"""Freeze and full tuning: train some (or all) of the model's own parameters, no extra modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.model.adapters import register_adapter
from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


def _layer_count(model: PreTrainedModel) -> int:
    count = getattr(model.config, "num_hidden_layers", None)
    if not count:
        raise UserError("freeze tuning needs config.num_hidden_layers, which this model does not define")
    return int(count)


@register_adapter("freeze")
def build_freeze(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    total = _layer_count(model)
    n = args.freeze_trainable_layers
    if n == 0 or abs(n) > total:
        raise UserError(f"freeze_trainable_layers must be between -{total} and {total} and not 0 (got {n})")
    layers = range(total - n, total) if n > 0 else range(-n)
    prefixes = {f".{i}." for i in layers}
    modules = args.freeze_trainable_modules
    for name, param in model.named_parameters():
        in_layer = any(p in name for p in prefixes) and ".layers." in name
        wanted = modules == ["all"] or any(f".{m}." in name for m in modules)
        param.requires_grad_(in_layer and wanted)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"freeze_trainable_modules {modules} matched no parameter in the trainable layers")
    return model


@register_adapter("full")
def build_full(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    for param in model.parameters():
        param.requires_grad_(True)
    return model
