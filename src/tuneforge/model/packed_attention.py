"""Packed rows attend within themselves without a block mask: the `sdpa_packed` attention.

For rows packed into one sequence (position ids restarting at each row and no attention mask: `neat_packing` and
`merge_micro_batches`), transformers builds a block-diagonal causal mask of length² entries and SDPA computes
the whole square, masked: rows of n_1, ..., n_k tokens cost (Σ n_i)² instead of Σ n_i². This attention instead
runs SDPA with `is_causal` on each packed row's own slice of the queries, keys and values (transformers' own SDPA
function, so grouped-query attention and scaling are handled as there) and concatenates the results: the same
outputs and gradients (tests/model/test_packed_attention.py), what FlashAttention's varlen kernels do on CUDA.

Everything else (a padding mask, a KV cache, one row per sequence) goes to transformers' SDPA unchanged. Models
whose masks are not plain causal (sliding windows, bidirectional image tokens, ...) keep `sdpa` (`usable`).
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "sdpa_packed"


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: `query` `[batch, heads, length, head_dim]`, `key`/`value`
    `[batch, kv_heads, length, head_dim]`; returns `([batch, length, heads, head_dim], None)`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    positions = kwargs.get("position_ids")
    length = query.shape[2]
    if attention_mask is not None or positions is None or length < 2 or key.shape[2] != length:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    positions = positions.expand(query.shape[0], -1)
    starts = [(row == 0).nonzero().flatten().tolist() for row in positions]
    if all(s == [0] for s in starts):  # one sequence per row: plain causal SDPA
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    rows = []
    for b, row_starts in enumerate(starts):
        bounds = [*([0] if row_starts[:1] != [0] else []), *row_starts, length]
        parts = [
            sdpa_attention_forward(
                module,
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                None,
                **kwargs,
            )[0]
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0), None


def packed_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """No mask where there is no padding (the attention finds the rows from the position ids); transformers'
    SDPA mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Registers `sdpa_packed` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, packed_mask)
    return NAME


def usable(config: Any) -> bool:
    """Whether a model's attention is plain causal everywhere, so `sdpa_packed` computes what `sdpa` does: a text
    decoder without sliding-window layers, attention sinks, soft-capping or mask overlays."""
    if (
        getattr(config, "vision_config", None) is not None
        or getattr(config, "audio_config", None) is not None
    ):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return False
    return not any(getattr(config, k, None) for k in ("attn_logit_softcapping", "attention_chunk_size"))
