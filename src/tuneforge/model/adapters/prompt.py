"""Prompt Tuning (Lester et al. 2021): trained input embeddings only, the base model frozen; and what the
three PEFT prompt methods share (`prefix.py`, `p_tuning.py`): the virtual-token keys and the wrapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tuneforge.config.plugins import Params
from tuneforge.model.adapters import register_adapter
from tuneforge.model.loader import model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


class VirtualTokenParams(Params):
    """How many virtual tokens a prompt method trains (shared by prefix, prompt and p_tuning)."""

    num_virtual_tokens: int = Field(
        20, gt=0, description="prefix/prompt/p_tuning: number of trained virtual tokens."
    )


class EncoderParams(VirtualTokenParams):
    encoder_hidden_size: int | None = Field(
        None, gt=0, description="p_tuning: hidden size of the prompt encoder (default: the model's)."
    )


class PromptParams(VirtualTokenParams):
    prompt_tuning_init_text: str | None = Field(
        None, description="prompt: initialise the virtual tokens from this text instead of randomly."
    )


def wrap_prompt_method(model: PreTrainedModel, config: object, model_args: ModelArguments) -> PreTrainedModel:
    from peft import PeftModel, get_peft_model

    if model_args.adapter_name_or_path:
        return PeftModel.from_pretrained(model, model_args.adapter_name_or_path[-1], is_trainable=True)
    return get_peft_model(model, config)


@register_adapter("prompt", PromptParams, peft=True)
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
    return wrap_prompt_method(model, config, model_args)
