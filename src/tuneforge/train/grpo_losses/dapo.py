"""DAPO (Yu et al. 2025, eq. 8), token-level policy gradient: as bnpo, but the denominator is the counted
tokens of the whole batch over every process,

    L = - sum_i sum_t [ min(r_it A_i, clip(r_it, 1 - eps, 1 + eps_high) A_i) - beta KL_it ] / sum_{all i} |o_i|

so each process's gradient, averaged by data parallelism, is the gradient of the global token mean. DAPO's
other parts are keys of their own: clip-higher (epsilon_high, paper: eps 0.2, eps_high 0.28), dynamic
sampling (grpo_dynamic_sampling) and the overlong filter (mask_truncated_completions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.train.grpo_losses import RolloutTokens, register_grpo_loss, token_losses
from tuneforge.train.grpo_losses.bnpo import counted_tokens

if TYPE_CHECKING:
    import torch


def global_tokens(tokens: RolloutTokens) -> torch.Tensor:
    """Counted tokens over all processes, divided by their number (data parallelism averages gradients)."""
    import torch

    count = counted_tokens(tokens).detach().clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return count


@register_grpo_loss("dapo")
def loss(tokens: RolloutTokens, args: Any) -> torch.Tensor:
    return token_losses(tokens, args).sum() / global_tokens(tokens).clamp(min=1)
