"""Fine-tuning methods as a registry: `finetuning_type: NAME` picks the builder registered under NAME."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments

AdapterBuilder = Callable[["PreTrainedModel", "FinetuningArguments", "ModelArguments"], "PreTrainedModel"]
_BUILDERS: dict[str, AdapterBuilder] = {}


def register_adapter(name: str) -> Callable[[AdapterBuilder], AdapterBuilder]:
    def wrap(fn: AdapterBuilder) -> AdapterBuilder:
        _BUILDERS[name] = fn
        return fn

    return wrap


def apply_adapter(
    model: PreTrainedModel, finetuning: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    """Make only the parameters of `finetuning.finetuning_type` trainable (wrapping the model if needed)."""
    from tuneforge.model.adapters import freeze, lora, prompt  # noqa: F401 - registration side effect

    try:
        builder = _BUILDERS[finetuning.finetuning_type]
    except KeyError:
        raise ValueError(
            f"finetuning_type '{finetuning.finetuning_type}' has no builder; known: {', '.join(sorted(_BUILDERS))}"
        ) from None
    return builder(model, finetuning, model_args)


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit tensor packs two parameters per stored byte."""

    def count(p: object) -> int:
        return p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)

    trainable = sum(count(p) for p in model.parameters() if p.requires_grad)
    total = sum(count(p) for p in model.parameters())
    return trainable, total
