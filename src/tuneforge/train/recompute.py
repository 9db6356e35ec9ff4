"""What gradient checkpointing recomputes: `gradient_checkpointing_policy`.

With checkpointing each decoder layer keeps only its input in the forward pass and runs again in the backward
pass. On long rows the most expensive part of that rerun is attention: its FLOPs grow with the square of the
row length (SmolLM2 at 2,048 tokens: about 40% of a layer's forward) while its output is one vector per token.

`keep_attention` (the default) keeps the output of each layer's fused attention kernel (SDPA's output and
log-sum-exp, `heads x head_dim + heads` floats per token per layer) through PyTorch's selective activation
checkpointing, so the rerun recomputes the projections, norms and MLP but not attention. The backward pass is the
same computation on the same values: losses and gradients equal full recomputation
(tests/train/test_recompute.py). `full` keeps only the layer inputs (the least memory).

Attention that does not go through a fused kernel (`flash_attn: disabled`, eager) has nothing to keep, so it is
recomputed as under `full`. Under DeepSpeed ZeRO-3 and FSDP the layers gather their sharded weights inside the
checkpointed region, and the rerun does not repeat those gathers in the same order, which selective
checkpointing refuses (PyTorch raises "encountered during backward but not found in storage"); such runs
recompute as under `full` and say so.
"""

from __future__ import annotations

import functools
from typing import Any, get_args

import torch
from transformers import TrainerCallback

from tuneforge.config.schema import TrainingArguments
from tuneforge.train.parallel import zero_settings
from tuneforge.utils.log import info

POLICIES = get_args(TrainingArguments.model_fields["gradient_checkpointing_policy"].annotation)

# The fused attention kernels whose outputs `keep_attention` keeps: CPU, and CUDA's flash, memory-efficient and
# cuDNN SDPA backends (each name is looked up where this torch has it).
_ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)


@functools.cache
def attention_ops() -> frozenset[Any]:
    """The attention operators (overloads) whose outputs are kept."""
    ops = (getattr(torch.ops.aten, name, None) for name in _ATTENTION_OPS)
    return frozenset(op.default for op in ops if op is not None)


def effective_policy(cfg: Any) -> tuple[str, str | None]:
    """The policy a run gets and, when it is not the one configured, why (a sentence for the log)."""
    policy = cfg.training.gradient_checkpointing_policy
    if policy == "keep_attention" and zero_settings(cfg)[0] == 3:
        return "full", (
            "gradient_checkpointing_policy keep_attention recomputes whole layers under ZeRO-3 and FSDP (their "
            "weight gathers inside a layer cannot be replayed selectively)"
        )
    return policy, None


def _keep_attention(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in attention_ops() else CheckpointPolicy.PREFER_RECOMPUTE


def keep_attention_context() -> tuple[Any, Any]:
    """`context_fn` for `torch.utils.checkpoint.checkpoint` (non-reentrant): attention outputs saved, the rest
    recomputed."""
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_keep_attention)


def apply_policy(model: torch.nn.Module, policy: str) -> int:
    """Give every checkpointed layer of `model` the policy; returns how many layers have it.

    Acts on layers whose checkpoint function transformers set (`gradient_checkpointing_enable`), and only with
    non-reentrant checkpointing (the reentrant kind cannot keep selected outputs; such layers stay `full`)."""
    if policy not in POLICIES:
        raise ValueError(
            f"gradient_checkpointing_policy must be one of {', '.join(POLICIES)}, not {policy!r}"
        )
    if policy == "full":
        return 0
    from transformers.modeling_layers import GradientCheckpointingLayer

    changed = []
    for module in model.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if not getattr(module, "gradient_checkpointing", False) or not isinstance(func, functools.partial):
            continue
        if func.keywords.get("use_reentrant", True) or "context_fn" in func.keywords:
            continue
        # every module transformers gave the function (models of the older kind call it from the model's loop)
        module._gradient_checkpointing_func = functools.partial(func, context_fn=keep_attention_context)
        changed.append(module)
    layers = [m for m in changed if isinstance(m, GradientCheckpointingLayer)]
    return len(layers or changed)


class CheckpointingPolicy(TrainerCallback):
    """Applies `gradient_checkpointing_policy` once the Trainer has turned checkpointing on (it does that in
    `train()`, before `on_train_begin`), and says in the log what the layers keep."""

    def __init__(self, cfg: Any) -> None:
        self.policy, why = effective_policy(cfg)
        if why:
            info(why)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None or self.policy == "full":
            return
        layers = apply_policy(model, self.policy)
        if layers:
            info(f"gradient checkpointing: {layers} layers keep their attention outputs (keep_attention)")
        else:
            info(
                "gradient checkpointing: recomputes whole layers (keep_attention needs non-reentrant checkpointing)"
            )
