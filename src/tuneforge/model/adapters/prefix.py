"""Prefix-Tuning (Li & Liang 2021): trained key/value prefixes in every attention layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tuneforge.model.adapters import register_adapter
from tuneforge.model.adapters.prompt import EncoderParams, wrap_prompt_method

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


class PrefixParams(EncoderParams):
    prefix_projection: bool = Field(
        False, description="prefix: produce the prefix through a trained MLP (reparameterisation)."
    )


@register_adapter("prefix", PrefixParams, peft=True)
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
    return wrap_prompt_method(model, config, model_args)
