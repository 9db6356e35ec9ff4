"""OFT: each target weight is multiplied by a trained block-diagonal orthogonal matrix (Qiu et al. 2023)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tuneforge.model.adapters import register_adapter
from tuneforge.model.adapters.lora import (
    TargetParams,
    load_adapters,
    peft_targets,
    resolve_extra_modules,
    targeted,
)
from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


class OftParams(TargetParams):
    oft_block_size: int = Field(32, gt=0, description="oft: size of each orthogonal block.")


@register_adapter("oft", OftParams, peft=True)
def build_oft(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    """Orthogonal fine-tuning: each target weight is multiplied by a trained block-diagonal orthogonal matrix."""
    from peft import OFTConfig, TaskType, get_peft_model

    if model_args.adapter_name_or_path:
        return load_adapters(model, model_args.adapter_name_or_path, trainable_last=True)
    targets = peft_targets(model, args)
    sizes = {
        m.in_features for n, m in model.named_modules() if targeted(n, targets) and hasattr(m, "in_features")
    }
    bad = sorted(size for size in sizes if size % args.oft_block_size)
    if bad:
        raise UserError(
            f"oft_block_size {args.oft_block_size} must divide the input size of every target layer "
            f"(these are not multiples: {bad}); pick a divisor or narrow lora_target"
        )
    config = OFTConfig(
        task_type=TaskType.CAUSAL_LM,
        r=0,
        oft_block_size=args.oft_block_size,
        target_modules=targets,
        modules_to_save=resolve_extra_modules(model, args.additional_target),
    )
    return get_peft_model(model, config)
