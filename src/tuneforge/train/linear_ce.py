"""The output head and its loss, chunk by chunk: the `[tokens, vocab]` logits never exist whole.

A causal LM's logits are its largest activation (49,152 x tokens for SmolLM2, 151,936 x tokens for
Qwen): autograd keeps them, and their softmax, for the backward pass. Here each chunk of `chunk_rows`
answer positions is projected, used and freed:

- `linear_cross_entropy` (SFT, pretraining) computes, per chunk, the loss *and* its gradients in the
  forward pass (d loss / d logits = softmax - onehot), so the backward pass only scales them: no
  extra matmul, and memory holds one chunk's logits plus the gradients of the inputs.
- `linear_label_logps` (DPO, KTO, PPO, GRPO: per-token log-probabilities whose upstream gradients are
  only known later) keeps the inputs and recomputes each chunk's logits in the backward pass: one extra
  head matmul, the same memory bound.

Both equal `F.cross_entropy(head(states))` / `head(states).log_softmax(-1)[targets]` up to float
summation order (tests/train/test_linear_ce.py), and apply only to a plain `nn.Linear` head whose weight
is a whole tensor (not ZeRO-3 partitioned, FSDP-sharded, quantized or wrapped by PEFT); `fusable` says so.

Shapes: `states [n, hidden]`, `weight [vocab, hidden]`, `bias [vocab] | None`, `targets [n]` (long).
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ELEMENTS = 1 << 25  # logits per chunk: 32M floats (128 MB in float32)


def chunk_rows(vocab: int) -> int:
    """Answer positions per chunk, so that one chunk's float32 logits stay near `CHUNK_ELEMENTS`."""
    return max(16, CHUNK_ELEMENTS // max(1, vocab))


def fusable(head: torch.nn.Module) -> bool:
    """Whether `head` is a plain linear layer holding its whole weight (the chunked paths read it directly)."""
    weight = getattr(head, "weight", None)
    return (
        type(head) is torch.nn.Linear
        and isinstance(weight, torch.nn.Parameter)
        and type(weight.data) is torch.Tensor  # not an FSDP DTensor
        and not hasattr(weight, "ds_id")  # not a DeepSpeed ZeRO-3 partition
        and weight.dim() == 2
        and weight.numel() > 0
    )


def _logits(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`[rows, vocab]` float32 logits of one chunk (the matmul in the weight's dtype, as the head runs)."""
    out = states.to(weight.dtype) @ weight.t()
    if bias is not None:
        out = out + bias
    return out.float()


def _exp_normalise_(z: torch.Tensor, softmax: bool = True) -> torch.Tensor:
    """logsumexp of each row of the float32 logits `z` `[rows, vocab]` (returned, `[rows]`), turning `z` in place
    into its softmax (`softmax=False`: into exp(z - max), left unnormalised). In place, because a chunk's logits are
    the largest buffer here: `torch.logsumexp` and `torch.softmax` would each allocate and fill another."""
    top = z.amax(dim=-1, keepdim=True)
    z.sub_(top).exp_()
    norm = z.sum(dim=-1, keepdim=True)
    if softmax:
        z.div_(norm)
    return (norm.log_() + top).squeeze(-1)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i [logsumexp(z_i) - z_i[t_i]] with z_i = W s_i + b, gradients formed chunk by chunk in forward."""

    @staticmethod
    def forward(
        ctx: Any,
        states: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        rows: int,
    ) -> torch.Tensor:
        need_s, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=states.device)
        grad_s = torch.empty_like(states) if need_s else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for start in range(0, states.shape[0], rows):
            s, t = states[start : start + rows], targets[start : start + rows]
            g = _logits(s, weight, bias)
            picked = g.gather(-1, t[:, None]).squeeze(-1)
            grads = need_s or need_w or need_b
            total += (_exp_normalise_(g, softmax=grads) - picked).sum()
            if grads:  # g is now softmax(z); d loss / d z = softmax(z) - onehot(t)
                g.scatter_add_(-1, t[:, None], torch.full_like(t[:, None], -1, dtype=g.dtype))
                if need_s:
                    grad_s[start : start + rows] = (g.to(weight.dtype) @ weight).to(states.dtype)
                if need_w:
                    grad_w += g.t() @ s.float()
                if need_b:
                    grad_b += g.sum(0)
        ctx.save_for_backward(*(x if x is not None else torch.empty(0) for x in (grad_s, grad_w, grad_b)))
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_s, grad_w, grad_b = ctx.saved_tensors
        need_s, need_w, need_b = ctx.needs_input_grad[:3]
        w_dtype, b_dtype = ctx.dtypes
        return (
            grad_s * grad_out.to(grad_s.dtype) if need_s else None,
            (grad_w * grad_out).to(w_dtype) if need_w else None,
            (grad_b * grad_out).to(b_dtype) if need_b else None,
            None,
            None,
        )


class _LinearLabelLogps(torch.autograd.Function):
    """log softmax(z_i)[t_i] per position, z_i = W s_i + b; each chunk's logits recomputed in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        states: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        rows: int,
    ) -> torch.Tensor:
        out = torch.empty(states.shape[0], dtype=torch.float32, device=states.device)
        for start in range(0, states.shape[0], rows):
            z = _logits(states[start : start + rows], weight, bias)
            t = targets[start : start + rows]
            picked = z.gather(-1, t[:, None]).squeeze(-1)
            out[start : start + rows] = picked - _exp_normalise_(z, softmax=False)
        ctx.save_for_backward(states, weight, *([bias] if bias is not None else []), targets)
        ctx.rows, ctx.has_bias = rows, bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        states, weight, targets = saved[0], saved[1], saved[-1]
        bias = saved[2] if ctx.has_bias else None
        need_s, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_s = torch.empty_like(states) if need_s else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b and bias is not None else None
        for start in range(0, states.shape[0], ctx.rows):
            s, t = states[start : start + ctx.rows], targets[start : start + ctx.rows]
            go = grad_out[start : start + ctx.rows].float()
            # d logp_t / d z = onehot(t) - softmax(z), times the upstream gradient of each position
            g = _logits(s, weight, bias)
            _exp_normalise_(g)
            g.mul_(-go[:, None])
            g.scatter_add_(-1, t[:, None], go[:, None])
            if need_s:
                grad_s[start : start + ctx.rows] = (g.to(weight.dtype) @ weight).to(states.dtype)
            if need_w:
                grad_w += g.t() @ s.float()
            if grad_b is not None:
                grad_b += g.sum(0)
        return (
            grad_s,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
            None,
        )


def linear_cross_entropy(states: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of `head(states)` against `targets` (a float32 scalar), chunk by chunk."""
    rows = chunk_rows(head.weight.shape[0])
    return _LinearCrossEntropy.apply(states, head.weight, head.bias, targets, rows)


def linear_label_logps(states: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
    """`[n]` float32 log-probabilities of `targets` under `head(states)`, chunk by chunk."""
    rows = chunk_rows(head.weight.shape[0])
    return _LinearLabelLogps.apply(states, head.weight, head.bias, targets, rows)
