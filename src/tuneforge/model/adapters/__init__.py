"""Fine-tuning methods as plug-ins: `finetuning_type: NAME` picks the member registered under NAME.

Each file here is one method (or a helper of several): it declares its keys as a `Params` model and
registers a builder `(model, finetuning_args, model_args) -> model` with `register_adapter`. The folder is
discovered, so a new method is a new file (`lora.py` is the one to copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tuneforge.config.plugins import Params, family

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments

AdapterBuilder = Callable[["PreTrainedModel", "FinetuningArguments", "ModelArguments"], "PreTrainedModel"]
METHODS = family("finetuning_type")


def register_adapter(
    name: str, params: type[Params] | None = None, **traits: Any
) -> Callable[[AdapterBuilder], AdapterBuilder]:
    """Register a method; `peft=True` says it wraps the model in PEFT (an adapter is what gets saved)."""
    return METHODS.register(name, params, **traits)


def is_peft(finetuning_type: str) -> bool:
    """Whether the method wraps the model in PEFT, so its reference policy is the model with adapters off."""
    return bool(METHODS.get(finetuning_type).traits.get("peft"))


def apply_adapter(
    model: PreTrainedModel, finetuning: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    """Make only the parameters of `finetuning.finetuning_type` trainable (wrapping the model if needed); on a
    vision-language model, only in the parts the freeze_* keys leave unfrozen."""
    from tuneforge.model.vision import freeze_parts

    try:
        method = METHODS.get(finetuning.finetuning_type)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    model = method.target(model, finetuning, model_args)
    # vision-language models: frozen parts stay frozen whatever the method; freeze tuning adds unfrozen ones
    freeze_parts(model, finetuning, method_decides=finetuning.finetuning_type != "freeze")
    return model


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit tensor packs two parameters per stored byte, and a
    weight partitioned by DeepSpeed ZeRO-3 counts its whole size (`ds_numel`), not this process's share."""

    def count(p: object) -> int:
        return getattr(p, "ds_numel", None) or p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)

    trainable = sum(count(p) for p in model.parameters() if p.requires_grad)
    total = sum(count(p) for p in model.parameters())
    return trainable, total
