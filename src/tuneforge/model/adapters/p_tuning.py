"""P-Tuning (Liu et al. 2021): virtual token embeddings produced by a small trained encoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.model.adapters import register_adapter
from tuneforge.model.adapters.prompt import EncoderParams, wrap_prompt_method

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.config import FinetuningArguments, ModelArguments


@register_adapter("p_tuning", EncoderParams, peft=True)
def build_p_tuning(
    model: PreTrainedModel, args: FinetuningArguments, model_args: ModelArguments
) -> PreTrainedModel:
    from peft import PromptEncoderConfig, TaskType

    config = PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.num_virtual_tokens,
        encoder_hidden_size=args.encoder_hidden_size or model.config.hidden_size,
    )
    return wrap_prompt_method(model, config, model_args)
