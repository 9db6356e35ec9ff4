"""LoRA through PEFT: low-rank updates on chosen linear layers, base weights frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from tuneforge.config.plugins import Params
from tuneforge.config.schema import split_names
from tuneforge.model.adapters import register_adapter
from tuneforge.model.vision import is_vision_language, lora_pattern
from tuneforge.utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments, TrainingArguments


class TargetParams(Params):
    """Which modules an adapter wraps (shared by lora and oft)."""

    lora_target: list[str] = Field(
        default_factory=lambda: ["all"],
        description="Modules that get LoRA: `all` (every linear layer but the output head) or names like q_proj,v_proj.",
    )
    additional_target: list[str] | None = Field(
        None,
        description="Modules trained fully and saved with the adapter (e.g. embed_tokens,lm_head after adding tokens).",
    )

    _split_lora_targets = field_validator("lora_target", "additional_target", mode="before")(split_names)


class LoraParams(TargetParams):
    lora_rank: int = Field(8, gt=0, description="Rank of the LoRA matrices.")
    lora_alpha: int | None = Field(None, gt=0, description="LoRA scaling numerator (default: 2 x lora_rank).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    use_dora: bool = Field(False, description="lora: weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(
        False, description="lora: rank-stabilised scaling alpha/sqrt(r) instead of alpha/r."
    )
    pissa_init: bool = Field(
        False, description="lora: initialise from the principal singular vectors of each weight (PiSSA)."
    )
    pissa_iter: int = Field(16, ge=-1, description="PiSSA: fast-SVD iterations (-1: exact SVD, slower).")
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: the B matrices learn this many times faster than A (16 is typical)."
    )
    loraplus_lr_embedding: float = Field(
        1e-6, gt=0, description="LoRA+: learning rate of LoRA on embeddings."
    )
    create_new_adapter: bool = Field(
        False,
        description="With adapter_name_or_path: merge all given adapters and train a fresh one on top.",
    )

    @property
    def resolved_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else self.lora_rank * 2


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


def peft_targets(model: PreTrainedModel, args: FinetuningArguments) -> list[str] | str:
    """`lora_target` resolved for PEFT: layer names, or on a vision-language model (where names like q_proj
    exist in the vision tower too) one pattern of the layers in the parts that train."""
    targets = resolve_targets(model, args.lora_target)
    return lora_pattern(model, targets, args) if is_vision_language(model.config) else targets


def targeted(name: str, targets: list[str] | str) -> bool:
    """Whether PEFT's `target_modules` picks the module called `name`."""
    import re

    return (
        bool(re.fullmatch(targets, name)) if isinstance(targets, str) else name.rsplit(".", 1)[-1] in targets
    )


def is_quantized(model: PreTrainedModel) -> bool:
    """Whether the base weights are stored quantized (bitsandbytes through `quantization_bit`)."""
    return bool(getattr(model, "is_quantized", False)) or getattr(model, "hf_quantizer", None) is not None


def load_adapters(model: PreTrainedModel, paths: list[str], trainable_last: bool) -> PreTrainedModel:
    """Merge adapters into the base in order; the last one stays an adapter (trainable) unless merged too."""
    from peft import PeftModel

    quantized = is_quantized(model)
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


@register_adapter("lora", LoraParams, peft=True)
def build_lora(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import LoraConfig, TaskType, get_peft_model

    adapters = model_args.adapter_name_or_path or []
    if adapters:
        # Continue training the last adapter (earlier ones merged into the base), or merge them all and
        # start a fresh adapter on top with create_new_adapter.
        model = load_adapters(model, adapters, trainable_last=not args.create_new_adapter)
        if not args.create_new_adapter:
            return model
    quantized = is_quantized(model)
    targets = peft_targets(model, args)
    scoring = type(model).__name__.endswith("ForSequenceClassification")  # reward models: head saved too
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if scoring else TaskType.CAUSAL_LM,
        r=args.lora_rank,
        lora_alpha=args.resolved_lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=uses_conv1d(model, list(targets))
        if isinstance(targets, list)
        else False,  # Conv1D stores its weight transposed
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
