"""LoRA through PEFT: low-rank updates on chosen linear layers, base weights frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.model.adapters import register_adapter
from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


def find_linear_targets(model: PreTrainedModel) -> list[str]:
    """Names (last component) of every linear layer except the output head, for `lora_target: all`."""
    import torch

    output = model.get_output_embeddings()
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_targets(model: PreTrainedModel, requested: list[str]) -> list[str]:
    if requested == ["all"]:
        return find_linear_targets(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in requested if t not in present]
    if missing:
        raise UserError(
            f"lora_target names {missing} that this model does not have; "
            f"its linear layers are: {', '.join(find_linear_targets(model))} (or use lora_target: all)"
        )
    return requested


@register_adapter("lora")
def build_lora(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if model_args.adapter_name_or_path:
        # Continue training the last adapter; earlier ones are merged into the base first.
        *merge, last = model_args.adapter_name_or_path
        for path in merge:
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        return PeftModel.from_pretrained(model, last, is_trainable=True)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=args.lora_rank,
        lora_alpha=args.resolved_lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=resolve_targets(model, args.lora_target),
    )
    return get_peft_model(model, config)
