"""LoRA through PEFT: low-rank updates on chosen linear layers, base weights frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.model.adapters import register_adapter
from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments, TrainingArguments


def find_linear_targets(model: PreTrainedModel) -> list[str]:
    """Names (last component) of every linear layer except the output head, for `lora_target: all`.

    GPT-2-style models implement their linear layers as transformers' Conv1D; those count too.
    Quantized layers (bitsandbytes) subclass nn.Linear. MoE experts stored as fused 3-D parameters
    are not layers; they are trained by freeze/full tuning.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    output = model.get_output_embeddings()
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not output:
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def uses_conv1d(model: PreTrainedModel, targets: list[str]) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules())


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


def _load_adapters(model: PreTrainedModel, paths: list[str], trainable_last: bool) -> PreTrainedModel:
    """Merge adapters into the base in order; the last one stays an adapter (trainable) unless merged too."""
    from peft import PeftModel

    quantized = getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None
    to_merge = paths if not trainable_last else paths[:-1]
    if quantized and to_merge:
        raise UserError(
            "adapters cannot be merged into quantized weights; with quantization_bit, give one adapter in "
            "adapter_name_or_path and leave create_new_adapter off"
        )
    for path in to_merge:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if trainable_last:
        return PeftModel.from_pretrained(model, paths[-1], is_trainable=True)
    return model


def _init_weights(args: FinetuningArguments, quantized: bool) -> bool | str:
    if not args.pissa_init:
        return True
    if quantized:
        raise UserError(
            "pissa_init decomposes full-precision weights, so it cannot start from quantized ones; "
            "turn off quantization_bit or pissa_init"
        )
    return "pissa" if args.pissa_iter == -1 else f"pissa_niter_{args.pissa_iter}"


@register_adapter("lora")
def build_lora(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import LoraConfig, TaskType, get_peft_model

    adapters = model_args.adapter_name_or_path or []
    if adapters:
        # Continue training the last adapter (earlier ones merged into the base), or merge them all and
        # start a fresh adapter on top with create_new_adapter.
        model = _load_adapters(model, adapters, trainable_last=not args.create_new_adapter)
        if not args.create_new_adapter:
            return model
    quantized = getattr(model, "hf_quantizer", None) is not None
    targets = resolve_targets(model, args.lora_target)
    scoring = type(model).__name__.endswith("ForSequenceClassification")  # reward models: head saved too
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if scoring else TaskType.CAUSAL_LM,
        r=args.lora_rank,
        lora_alpha=args.resolved_lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=uses_conv1d(model, targets),  # Conv1D stores its weight transposed
        use_dora=args.use_dora,
        use_rslora=args.use_rslora,
        init_lora_weights=_init_weights(args, quantized),
        modules_to_save=resolve_extra_modules(model, args.additional_target),
    )
    return get_peft_model(model, config)


def resolve_extra_modules(model: PreTrainedModel, names: list[str] | None) -> list[str] | None:
    """`additional_target`: module names trained in full and saved with the adapter (checked to exist)."""
    if not names:
        return None
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [n for n in names if n not in present]
    if missing:
        raise UserError(f"additional_target names {missing} that this model does not have")
    return names


@register_adapter("oft")
def build_oft(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    """Orthogonal fine-tuning: each target weight is multiplied by a trained block-diagonal orthogonal matrix."""
    from peft import OFTConfig, TaskType, get_peft_model

    if model_args.adapter_name_or_path:
        return _load_adapters(model, model_args.adapter_name_or_path, trainable_last=True)
    targets = resolve_targets(model, args.lora_target)
    sizes = {
        m.in_features
        for n, m in model.named_modules()
        if n.rsplit(".", 1)[-1] in targets and hasattr(m, "in_features")
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


def loraplus_optimizer(model: PreTrainedModel, args: FinetuningArguments, training: TrainingArguments) -> Any:
    """LoRA+: AdamW whose B matrices learn `loraplus_lr_ratio` times faster than the A matrices."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    if args.finetuning_type != "lora":
        raise UserError(f"loraplus_lr_ratio applies to finetuning_type: lora, not {args.finetuning_type}")
    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=training.learning_rate,
        loraplus_lr_ratio=args.loraplus_lr_ratio,
        loraplus_lr_embedding=args.loraplus_lr_embedding,
        weight_decay=training.weight_decay,
    )
