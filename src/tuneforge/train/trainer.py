"""The Hugging Face Trainer with a loss that computes logits only where there are labels.

A causal LM's output head is the single largest matmul and its logits the largest activation
(vocab x tokens). Prompt and padding positions never contribute to the SFT loss, so the head
runs on the hidden states of answer tokens only: same loss, less time and memory.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from tuneforge.data.template import IGNORE_INDEX


def split_decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder body, output head) of a causal LM, looking through PEFT wrappers; None if not separable."""
    inner = model
    if hasattr(inner, "peft_config"):
        if (
            getattr(inner, "active_peft_config", None) is not None
            and inner.active_peft_config.is_prompt_learning
        ):
            return None
        inner = inner.get_base_model()
    get_decoder = getattr(inner, "get_decoder", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder else None
    if decoder is None or head is None or decoder is inner:
        return None
    return decoder, head


def answer_only_loss(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], num_items: torch.Tensor | int | None
) -> torch.Tensor:
    """Next-token cross-entropy over label positions; summed then divided by `num_items` (or the local count)."""
    labels = inputs["labels"]
    parts = split_decoder_and_head(model)
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    # Packed rows come without an attention mask: transformers then reads row boundaries from position_ids.
    forward = {
        k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if inputs.get(k) is not None
    }
    # No KV cache while training: it only costs memory, and transformers ignores packing when one exists.
    forward["use_cache"] = False
    if parts is None:  # e.g. prompt-learning adapters: the full forward is needed
        picked = model(**forward).logits[:, :-1][keep]
    else:
        decoder, head = parts
        picked = head(decoder(**forward).last_hidden_state[:, :-1][keep])
    loss = F.cross_entropy(picked.float(), targets[keep], reduction="sum")
    denominator = num_items if num_items is not None else keep.sum().clamp(min=1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(loss.device)
    return loss / denominator


class TuneforgeTrainer(Trainer):
    """Trainer that counts non-padding tokens (for tokens/s) and uses `answer_only_loss`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tokens_seen = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        real = inputs.pop("num_tokens", None)
        if real is None and "attention_mask" in inputs:
            real = inputs["attention_mask"].sum()
        if model.training and real is not None:
            self.tokens_seen += int(real)
        loss = answer_only_loss(model, inputs, num_items_in_batch)
        # Only the loss exists: the head never ran on every position, so there are no full logits to return.
        return (loss, {"loss": loss}) if return_outputs else loss
