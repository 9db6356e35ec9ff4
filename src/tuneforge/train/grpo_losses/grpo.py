"""GRPO (Shao et al. 2024, DeepSeekMath, eq. 3): each completion's tokens averaged, then the completions:

    L = -1/G sum_i 1/|o_i| sum_t [ min(r_it A_i, clip(r_it, 1 - eps, 1 + eps_high) A_i) - beta KL_it ]

with r_it = pi(o_it) / pi_old(o_it) and KL_it the k3 estimator. Short completions weigh more per token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.train.grpo_losses import RolloutTokens, register_grpo_loss, row_sums, token_losses

if TYPE_CHECKING:
    import torch


def sequence_mean(per_token: torch.Tensor, tokens: RolloutTokens) -> torch.Tensor:
    """Mean over the counted completions of each completion's mean token loss."""
    sums, lengths = row_sums(per_token, tokens)
    counted = tokens.counted.to(sums.dtype)
    return (sums / lengths.clamp(min=1) * counted).sum() / counted.sum().clamp(min=1)


@register_grpo_loss("grpo")
def loss(tokens: RolloutTokens, args: Any) -> torch.Tensor:
    return sequence_mean(token_losses(tokens, args), tokens)
