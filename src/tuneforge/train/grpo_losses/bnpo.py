"""BNPO (batch-normalised): every counted token of the micro-batch weighs the same,

    L = - sum_i sum_t [ min(r_it A_i, clip(r_it, 1 - eps, 1 + eps_high) A_i) - beta KL_it ] / sum_i |o_i|

the sums over this process's micro-batch. Long completions count by their length, not as one sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.train.grpo_losses import RolloutTokens, register_grpo_loss, token_losses

if TYPE_CHECKING:
    import torch


def counted_tokens(tokens: RolloutTokens) -> torch.Tensor:
    return tokens.counted[tokens.rows].sum().to(tokens.logps.dtype)


@register_grpo_loss("bnpo")
def loss(tokens: RolloutTokens, args: Any) -> torch.Tensor:
    return token_losses(tokens, args).sum() / counted_tokens(tokens).clamp(min=1)
