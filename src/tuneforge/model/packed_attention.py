"""Packed rows attend within themselves without a block mask: the `sdpa_packed` attention.

For rows packed into one sequence (position ids restarting at each row and no attention mask: `neat_packing` and
`merge_micro_batches`), transformers builds a block-diagonal causal mask of length² entries and SDPA computes
the whole square, masked: rows of n_1, ..., n_k tokens cost (Σ n_i)² instead of Σ n_i². This attention instead
runs causal SDPA (transformers' own SDPA function, so grouped-query attention and scaling are handled as there)
on each packed row's own tokens: the same outputs and gradients (tests/model/test_packed_attention.py), what
FlashAttention's varlen kernels do on CUDA.

The rows are views from one `split` of the token-major queries, keys and values, so the backward pass joins their
gradients in one concatenation (slices would build a full-size zero gradient per row); the row lengths are read
from the position ids once per forward pass (one host sync) and reused by every layer and by gradient
checkpointing's recomputation. Per layer, forward and backward, on this project's 2-core CPU (medians of 6
alternating runs): eight rows of 60-75 tokens 6.2 ms instead of 7.3 ms; two rows of 1,800 and 1,700 tokens
unchanged (290-295 ms). Whole training steps: within the machine's noise.

Tried and not kept: gathering long rows of similar length into one right-padded batch and one SDPA call (exact
under a causal mask). Two rows of 1,024 tokens took 100 ms per layer instead of 114-126 ms, but whole training
steps were no faster and the long-row benchmark's peak RSS rose from 2.59 to 2.94 GB. For short rows (eight of
60-75 tokens, forward and backward, SmolLM2's 9 query and 3 key/value heads, medians of 30) one padded call with
`enable_gqa` took 7.0-7.9 ms against 6.8-7.6 ms for the per-row calls (2026-12-02): not kept either. Nor the
same padded batch as two batched matmuls around a masked softmax (each key/value head's group of query heads as
one matrix; another 2-core machine, jemalloc, medians of 40): level-length rows won (eight of 56-70 tokens 2.6
vs 3.6 ms forward and backward, twenty of 24-30 2.0 vs 3.6 ms), but the benchmark's windows mix rows of 46-116
tokens (eight of 52-116: 5.5-5.7 vs 5.0-5.1 ms) and whole runs took 16.4-17.6 s instead of 15.2-15.9 s at 2.28
instead of 1.95 GB (the attention weights are kept for the backward pass); forward passes alone were no faster.

Grouped-query attention on CPU: the fused kernel's backward pass splits its work by key/value head, so SmolLM2's
3 key/value heads keep only 3 of 4 thread slots busy on 2 threads (its 9 query heads: 9 of 10), and on a
16-thread machine 3 of 16. Where the query heads spread better over the threads, long rows (`EXPANDED_FROM`
tokens and more) run the kernel's forward pass as it is and its backward pass on keys and values repeated per
query head, summing their gradients per group (`_ExpandedBackward`; eager only, compiled models keep SDPA):
the same gradients, nothing more kept between the passes. On this 2-core CPU (medians of alternating runs),
forward and backward of one row (9 query, 3 key/value heads): 1,800 tokens 161 instead of 196 ms, 1,000 tokens
63 vs 67 ms, 512 tokens 20.1 vs 20.4 ms; with everything repeated, on 1 thread 274 vs 262 ms (so not there) and
for 8 rows of 70 tokens 7.6 vs 6.5 ms (hence the length threshold). A whole SmolLM2 LoRA step (rows of 1,800
and 1,700 tokens, checkpointing with keep_attention): 35.3 instead of 37.8 s, each of 5 runs faster than each
run without.

Everything else (a padding mask, a KV cache, one row per sequence) goes to transformers' SDPA unchanged. Models
whose masks are not plain causal (sliding windows, bidirectional image tokens, ...) keep `sdpa` (`usable`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

NAME = "sdpa_packed"

# rows shorter than this keep the grouped backward pass: repeating keys and values costs more than it spreads
EXPANDED_FROM = 512

# the position ids last read (their tensor and version) and their row lengths: every layer of a pass asks again
_last: tuple[torch.Tensor, int, list[int]] | None = None


def row_lengths(positions: torch.Tensor) -> list[int]:
    """The length of every packed row of `positions` `[batch, length]`, in token order (batch rows one after the
    other): a row starts where the positions restart at 0 and at each batch row's first token."""
    starts = positions == 0
    starts[:, 0] = True
    flat = starts.flatten().nonzero().flatten().tolist()
    return [e - s for s, e in zip(flat, [*flat[1:], positions.numel()], strict=True)]


def _cached_lengths(positions: torch.Tensor, batch: int) -> list[int]:
    """The row lengths of the model's `position_ids` tensor, read by its first layer and reused by the others."""
    global _last
    if _last is None or _last[0] is not positions or _last[1] != positions._version:
        _last = (positions, positions._version, row_lengths(positions.expand(batch, -1)))
    return _last[2]


def expanded_backward_pays(units: int, kv_units: int, threads: int) -> bool:
    """Whether the backward pass spreads better over `threads` as `units` (batch x query heads) than as
    `kv_units` (batch x key/value heads): the share of thread slots that hold work, each way."""

    def busy(n: int) -> float:
        return n / (threads * math.ceil(n / threads))

    return threads > 1 and busy(units) > busy(kv_units)


@functools.cache
def _expanded_kernels() -> tuple[Any, Any] | None:
    """The CPU flash-attention operators (forward, backward), None where this torch lacks them."""
    forward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    return None if forward is None or backward is None else (forward.default, backward.default)


class _ExpandedBackward(torch.autograd.Function):
    """Causal attention `[batch, heads, length, dim]` with fewer key/value heads: the CPU kernel's forward pass on
    the grouped keys and values, its backward pass on them repeated per query head (gradients summed per group).
    Keeps what SDPA keeps: the inputs, the output and the log-sum-exp."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None):
        forward, _ = _expanded_kernels()  # type: ignore[misc]
        out, logsumexp = forward(query, key, value, 0.0, True, scale=scale)
        ctx.save_for_backward(query, key, value, out, logsumexp)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        query, key, value, out, logsumexp = ctx.saved_tensors
        _, backward = _expanded_kernels()  # type: ignore[misc]
        groups = query.shape[1] // key.shape[1]
        repeated = (x.repeat_interleave(groups, dim=1) for x in (key, value))
        grad_q, grad_k, grad_v = backward(grad, query, *repeated, out, logsumexp, 0.0, True, scale=ctx.scale)
        grad_k, grad_v = (g.unflatten(1, (key.shape[1], groups)).sum(2) for g in (grad_k, grad_v))
        return grad_q, grad_k, grad_v, None


def _attend(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any
):
    """Causal attention of one sequence per batch row: `[batch, length, heads, dim]`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length = query.shape[:3]
    if (
        query.device.type == "cpu"
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()  # compiled models keep the kernels the compiler knows
        and length >= EXPANDED_FROM
        and not kwargs.get("dropout")
        and kwargs.get("softcap") is None
        and expanded_backward_pays(batch * heads, batch * key.shape[1], torch.get_num_threads())
        and _expanded_kernels() is not None
    ):
        return _ExpandedBackward.apply(query, key, value, kwargs.get("scaling")).transpose(1, 2)
    return sdpa_attention_forward(module, query, key, value, None, **kwargs)[0]


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
    batch, length = query.shape[0], query.shape[2]
    if attention_mask is not None or positions is None or length < 2 or key.shape[2] != length:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lengths = _cached_lengths(positions, batch)
    if len(lengths) == batch:  # one sequence per row: plain causal attention
        return _attend(module, query, key, value, **kwargs).contiguous(), None
    # [batch, heads, length, dim] -> [batch x length, heads, dim] (a view: transformers' projections are token-major)
    rows = zip(
        *(
            x.transpose(1, 2).reshape(batch * length, x.shape[1], x.shape[3]).split(lengths)
            for x in (query, key, value)
        ),
        strict=True,
    )
    outputs = [_attend(module, *(x.unsqueeze(0).transpose(1, 2) for x in row), **kwargs)[0] for row in rows]
    return torch.cat(outputs).view(batch, length, *outputs[0].shape[1:]), None


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
