"""LoRA layers whose frozen matmul and low-rank update run as one autograd node: `fused_lora`.

PEFT computes a LoRA linear layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`: the frozen matmul, the
two low-rank matmuls, then a scaling and an addition over the whole `[tokens, out_features]` output, and autograd
keeps the frozen weight, `x`, `A x` and the adapter weights for the backward pass. Here the rank-r product is
accumulated into the frozen matmul's output in place (`addmm_` with `alpha=scaling`), so the two full-size
elementwise passes and their temporaries are gone, and the backward pass is written out:

    y      = x W^T + b + s (x A^T) B^T            x: [tokens, in], A: [r, in], B: [out, r], s = scaling
    dx     = dy W + (s dy B) A                    (the second term through lora_A's own autograd node)
    dB     = s dy^T (x A^T)                       dA = (s dy B)^T x

The frozen weight is held by the node, not saved as an activation (it is a parameter, alive anyway). Under
gradient checkpointing that matters for the last LoRA layer of a decoder layer (the MLP's down projection):
PyTorch's recomputation stops as soon as every activation the backward pass needs is back, and PEFT's frozen
matmul saved its weight, so the recomputation ran that matmul (a quarter of a SmolLM2 layer's matmul work)
only to save it again. That layer's node keeps its `A x` (rank floats per token) instead of saving it, so the
recomputation stops after `lora_A`, before the frozen matmul.

Only plain LoRA takes this path: one active adapter, not merged, no dropout, DoRA or other variant, no LoRA bias,
a frozen `torch.nn.Linear` base, one dtype and no autocast. Anything else (and mixed-adapter batches, adapters
switched off for a reference model) runs PEFT's own forward. Not under DeepSpeed ZeRO-3 or FSDP, which gather
and free weights around each layer (the runner does not install it there).
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn
from torch.nn import functional as F


class _FrozenPlusLowRank(torch.autograd.Function):
    """`x W^T + b + s * ax B^T` with W and b frozen; `ax = x A^T` comes from lora_A's own node."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        ax: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_b: torch.Tensor,
        scaling: float,
        keep_ax: bool,
    ) -> torch.Tensor:
        out = F.linear(x, weight, bias)
        out.view(-1, out.shape[-1]).addmm_(ax.reshape(-1, ax.shape[-1]), lora_b.t(), alpha=scaling)
        ctx.weight, ctx.lora_b, ctx.scaling = weight, lora_b, scaling  # parameters: alive anyway
        ctx.keep_ax = keep_ax
        if keep_ax:  # not an activation of the checkpoint: recomputation need not reach this node
            ctx.ax = ax
        else:
            ctx.save_for_backward(ax)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        ax = ctx.ax if ctx.keep_ax else ctx.saved_tensors[0]
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = grad @ ctx.weight if ctx.needs_input_grad[0] else None
        grad_ax = torch.mm(flat, ctx.lora_b).mul_(ctx.scaling).view(*grad.shape[:-1], -1)
        grad_b = None
        if ctx.needs_input_grad[4]:
            grad_b = torch.mm(flat.t(), ax.reshape(-1, ax.shape[-1])).mul_(ctx.scaling)
        return grad_x, grad_ax, None, None, grad_b, None, None


def _plain_adapter(layer: Any, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The adapter to run fused, or None when this call needs PEFT's forward."""
    if args or kwargs or layer.disable_adapters or layer.merged:
        return None
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A:
        return None
    name = active[0]
    base = layer.base_layer
    if (
        name in getattr(layer, "lora_variant", {})
        or layer.use_dora.get(name)
        or not isinstance(layer.lora_dropout[name], nn.Identity)
        or layer.lora_B[name].bias is not None
        or type(base) is not nn.Linear
        or base.weight.requires_grad
        or (base.bias is not None and base.bias.requires_grad)
        or not (
            x.dtype == base.weight.dtype == layer.lora_A[name].weight.dtype == layer.lora_B[name].weight.dtype
        )
        or torch.is_autocast_enabled(x.device.type)
    ):
        return None
    return name


class FusedLoraLinear(LoraLinear):
    """PEFT's LoRA Linear with the plain case fused (module docstring); everything else is PEFT's."""

    _keep_ax = False  # set on the last LoRA layer of each decoder layer by `install`

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = _plain_adapter(self, x, args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        ax = self.lora_A[name](x)
        base = self.base_layer
        return _FrozenPlusLowRank.apply(
            x, ax, base.weight, base.bias, self.lora_B[name].weight, self.scaling[name], self._keep_ax
        )


def install(model: nn.Module) -> int:
    """Give every PEFT LoRA Linear of `model` the fused forward; returns how many layers have it.

    The last LoRA layer inside each decoder layer (in module order: the MLP's output projection) keeps its
    `A x` on the node, so checkpointing's recomputation stops before that layer's frozen matmul."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = FusedLoraLinear
            count += 1
    for block in model.modules():
        if isinstance(block, GradientCheckpointingLayer):
            last = [m for m in block.modules() if isinstance(m, FusedLoraLinear)][-1:]
            for module in last:
                module._keep_ax = True
    return count


def uninstall(model: nn.Module) -> None:
    """PEFT's own forward again (for comparisons)."""
    for module in model.modules():
        if type(module) is FusedLoraLinear:
            module.__class__ = LoraLinear
            module.__dict__.pop("_keep_ax", None)
