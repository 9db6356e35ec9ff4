"""Generation with PEFT prompt-learning adapters under transformers 5 (PEFT <= 0.21).

transformers 5 renamed the KV cache argument to `cache`; PEFT 0.21's generation path still speaks
`past_key_values`, with two consequences (tests/model/test_patches.py shows both on the
unpatched model, and fails once upstream fixes them):
- prefix tuning: the trained prefix, handed over as `past_key_values`, is ignored in favour of
  generate's own empty `cache`, so the adapter has no effect;
- prompt tuning / P-tuning: every decoding step is taken for the first and the virtual tokens are
  inserted again in front of each new token.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


def needed(model: PreTrainedModel) -> bool:
    """Only transformers with the `cache` argument and PEFT before 0.22 need this."""
    import peft

    major, minor = (int(x) for x in peft.__version__.split(".")[:2])
    forward = inspect.signature(model.get_base_model().forward).parameters
    return (major, minor) < (0, 22) and "cache" in forward


def apply(model: PreTrainedModel) -> None:
    """Patch `model` (a PeftModel with a prompt-learning adapter) in place, if this stack needs it."""
    if not needed(model):
        return
    if model.active_peft_config.peft_type == "PREFIX_TUNING":
        _prefix_into_cache(model)
    else:
        _virtual_tokens_once(model)


def _prefix_into_cache(model: PreTrainedModel) -> None:
    """Move the prefix PEFT prepares as `past_key_values` into `cache` on the first step."""
    original = model.prepare_inputs_for_generation

    def prepare(*args: object, **kwargs: object) -> dict[str, object]:
        inputs = original(*args, **kwargs)
        prefix, cache = inputs.get("past_key_values"), inputs.get("cache")
        if prefix is not None and cache is not None:
            inputs.pop("past_key_values")
            if cache.get_seq_length() == 0:
                inputs["cache"] = prefix
        return inputs

    model.prepare_inputs_for_generation = prepare


def _virtual_tokens_once(model: PreTrainedModel) -> None:
    """Put the virtual token embeddings in front of the prompt once and generate from embeddings.

    The result has the usual shape: the prompt ids, then the new ids.
    """
    import torch

    base = model.get_base_model()
    n_virtual = model.active_peft_config.num_virtual_tokens

    def generate(
        input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> object:
        batch = input_ids.shape[0]
        embeds = base.get_input_embeddings()(input_ids)
        virtual = model.get_prompt(batch_size=batch).to(embeds.dtype)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = torch.cat([attention_mask.new_ones(batch, n_virtual), attention_mask], dim=1)
        out = base.generate(inputs_embeds=torch.cat([virtual, embeds], dim=1), attention_mask=mask, **kwargs)
        if isinstance(out, torch.Tensor):
            return torch.cat([input_ids, out], dim=1)
        out.sequences = torch.cat([input_ids, out.sequences], dim=1)
        return out

    model.generate = generate
