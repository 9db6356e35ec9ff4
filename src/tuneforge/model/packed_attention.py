"""Packed rows attend within themselves without a block mask: the `sdpa_packed` attention.

For rows packed into one sequence (position ids restarting at each row and no attention mask: `neat_packing` and
`merge_micro_batches`), transformers builds a block-diagonal causal mask of length² entries and SDPA computes
the whole square, masked: rows of n_1, ..., n_k tokens cost (Σ n_i)² instead of Σ n_i². This attention instead
runs causal SDPA (transformers' own SDPA function, so grouped-query attention and scaling are handled as there)
on each packed row's own tokens: the same outputs and gradients (tests/model/test_packed_attention.py), what
FlashAttention's varlen kernels do on CUDA.

How the rows are cut, measured per layer (forward and backward) on this project's 2-core CPU:

- Short rows run one SDPA call each on views of the packed tensors (`split`: no copies, and the backward pass
  joins the gradients with one concatenation). Eight rows of 60-75 tokens: 5.7 ms gathered into one padded batch,
  4.8 ms row by row (and 9.3 ms with the slices of before, whose backward built a full-size zero gradient per row).
- Rows of at least `BATCH_FROM` tokens and similar lengths are gathered into one right-padded batch and run in
  one call: two rows of 1,024 tokens take 100 ms instead of 126 ms. Under a causal mask, padding at a row's end
  is never attended by the row's tokens (and its own outputs are dropped), so nothing changes but the speed.
  Rows are grouped longest first, a group's padded square staying within `PADDING_SLACK` of its rows' own
  squares: a row of 2,000 tokens and one of 600 run apart.

The plan (which token goes where) is worked out once per forward pass from the position ids and reused by every
layer, and by gradient checkpointing's recomputation.

Everything else (a padding mask, a KV cache, one row per sequence) goes to transformers' SDPA unchanged. Models
whose masks are not plain causal (sliding windows, bidirectional image tokens, ...) keep `sdpa` (`usable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

NAME = "sdpa_packed"
BATCH_FROM = 512  # rows this long or longer are batched with rows of similar length
PADDING_SLACK = 1.25  # a batch's rows x longest² may exceed the sum of its rows' own lengths² by this factor


@dataclass(frozen=True)
class _Call:
    """One SDPA call: a packed row's own tokens (a view), or a batch of rows gathered and right-padded."""

    start: int  # first flat token of a single row
    length: int  # its tokens; a batch's longest row
    piece: int = -1  # a single row: its index among the packed rows in token order (`_Plan.sizes`)
    rows: int = 1
    gather: torch.Tensor | None = (
        None  # a batch: [rows x length] the token of each slot (padding repeats a row's first)
    )
    real: torch.Tensor | None = None  # a batch: where its real tokens sit among the slots


@dataclass(frozen=True)
class _Plan:
    sizes: list[int]  # every packed row's length, in token order (the pieces single-row calls take as views)
    calls: tuple[_Call, ...]
    order: (
        torch.Tensor | None
    )  # for each token, its place in the calls' joined outputs; None: already in order


_last: tuple[torch.Tensor, int, _Plan] | None = (
    None  # the position ids of the last plan (every layer asks again)
)


def _segments(positions: torch.Tensor) -> list[tuple[int, int]]:
    """(first flat token, length) of every packed row of `positions` `[batch, length]`: a row starts where the
    positions restart at 0 and at each batch row's first token (so no packed row spans two batch rows)."""
    starts = positions == 0
    starts[:, 0] = True
    flat = starts.flatten().nonzero().flatten().tolist()
    return [(s, e - s) for s, e in zip(flat, [*flat[1:], positions.numel()], strict=True)]


def _groups(segments: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Long rows grouped, longest first, while padding to the group's longest stays within `PADDING_SLACK`."""
    groups: list[list[tuple[int, int]]] = []
    for segment in sorted((s for s in segments if s[1] >= BATCH_FROM), key=lambda seg: -seg[1]):
        group = groups[-1] if groups else None
        if group is not None:
            own = sum(n * n for _, n in group) + segment[1] ** 2
            if (len(group) + 1) * group[0][1] ** 2 <= PADDING_SLACK * own:
                group.append(segment)
                continue
        groups.append([segment])
    return groups


def _plan(positions: torch.Tensor) -> _Plan:
    """The SDPA calls for the packed rows of `positions` `[batch, length]`."""
    device, total = positions.device, positions.numel()
    segments = _segments(positions)
    piece = {start: i for i, (start, _) in enumerate(segments)}
    calls = [_Call(start, n, piece[start]) for start, n in segments if n < BATCH_FROM]
    for group in _groups(segments):
        if len(group) == 1:
            calls.append(_Call(*group[0], piece[group[0][0]]))
            continue
        longest = group[0][1]
        gather = torch.tensor([t for s, n in group for t in [*range(s, s + n), *[s] * (longest - n)]])
        real = torch.cat([torch.arange(i * longest, i * longest + n) for i, (_, n) in enumerate(group)])
        calls.append(
            _Call(group[0][0], longest, rows=len(group), gather=gather.to(device), real=real.to(device))
        )
    sizes = [n for _, n in segments]
    if all(call.rows == 1 for call in calls):
        return _Plan(sizes, tuple(sorted(calls, key=lambda call: call.start)), None)
    sources = [
        torch.arange(c.start, c.start + c.length) if c.gather is None else c.gather[c.real.cpu()]
        for c in calls
    ]
    order = torch.empty(total, dtype=torch.long)
    order[torch.cat(sources).cpu()] = torch.arange(total)
    return _Plan(sizes, tuple(calls), order.to(device))


def _cached_plan(positions: torch.Tensor, batch: int) -> _Plan:
    """The plan of the model's `position_ids` tensor, worked out by its first layer and reused by the others."""
    global _last
    if _last is None or _last[0] is not positions or _last[1] != positions._version:
        _last = (positions, positions._version, _plan(positions.expand(batch, -1)))
    return _last[2]


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
    plan = _cached_plan(positions, batch)
    if len(plan.calls) == batch and all(call.length == length for call in plan.calls):  # one sequence per row
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    # [batch, heads, length, dim] -> [batch x length, heads, dim] (a view: transformers' projections are token-major)
    q, k, v = (x.transpose(1, 2).reshape(batch * length, x.shape[1], x.shape[3]) for x in (query, key, value))
    # single rows take views from one split (its backward joins their gradients in one concatenation; slicing would
    # build a full-size zero gradient per row)
    pieces = [x.split(plan.sizes) for x in (q, k, v)] if any(c.gather is None for c in plan.calls) else None
    outputs = []
    for call in plan.calls:
        if call.gather is None:
            inputs = (x[call.piece].unsqueeze(0).transpose(1, 2) for x in pieces)
        else:
            shape = (call.rows, call.length)
            inputs = (x.index_select(0, call.gather).unflatten(0, shape).transpose(1, 2) for x in (q, k, v))
        out = sdpa_attention_forward(module, *inputs, None, **kwargs)[0].flatten(0, 1)
        outputs.append(out if call.real is None else out.index_select(0, call.real))
    merged = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    if plan.order is not None:
        merged = merged.index_select(0, plan.order)
    return merged.view(batch, length, *merged.shape[1:]), None


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
