"""The PEFT prompt methods: trained virtual tokens in front of every input, the base model frozen.

- `prefix`: trained key/value prefixes in every attention layer (Prefix-Tuning, Li & Liang 2021).
- `prompt`: trained input embeddings only (Prompt Tuning, Lester et al. 2021).
- `p_tuning`: virtual token embeddings produced by a small trained encoder (P-Tuning, Liu et al. 2021).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.model.adapters import register_adapter
from tuneforge.model.loader import model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


def _wrap(model: PreTrainedModel, config: object, model_args: ModelArguments) -> PreTrainedModel:
    from peft import PeftModel, get_peft_model

    if model_args.adapter_name_or_path:
        return PeftModel.from_pretrained(model, model_args.adapter_name_or_path[-1], is_trainable=True)
    return get_peft_model(model, config)


@register_adapter("prefix")
def build_prefix(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import PrefixTuningConfig, TaskType

    config = PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.num_virtual_tokens,
        prefix_projection=args.prefix_projection,
        encoder_hidden_size=args.encoder_hidden_size or model.config.hidden_size,
    )
    return _wrap(model, config, model_args)


@register_adapter("prompt")
def build_prompt(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    text = args.prompt_tuning_init_text
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=text,
        tokenizer_name_or_path=str(model_path(model_args)) if text else None,
    )
    return _wrap(model, config, model_args)


@register_adapter("p_tuning")
def build_p_tuning(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import PromptEncoderConfig, TaskType

    config = PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.num_virtual_tokens,
        encoder_hidden_size=args.encoder_hidden_size or model.config.hidden_size,
    )
    return _wrap(model, config, model_args)
