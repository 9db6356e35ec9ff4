"""GSPO (Zheng et al. 2025, Group Sequence Policy Optimization): the importance ratio and its clipping are
per sequence, the length-normalised likelihood ratio

    s_i = (pi(o_i) / pi_old(o_i))^(1/|o_i|) = exp( 1/|o_i| sum_t (log pi(o_it) - log pi_old(o_it)) )
    L = -1/G sum_i [ min(s_i A_i, clip(s_i, 1 - eps, 1 + eps_high) A_i) ]   (+ beta KL, averaged as in grpo)

Written per token as s_it = sg(s_i) pi(o_it) / sg(pi(o_it)) (GSPO-token with one advantage per sequence),
which has the same value and gradient. The paper clips far tighter than GRPO (eps 3e-4, eps_high 4e-4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.train.grpo_losses import RolloutTokens, register_grpo_loss, row_sums, token_losses
from tuneforge.train.grpo_losses.grpo import sequence_mean

if TYPE_CHECKING:
    import torch


def sequence_log_ratio(tokens: RolloutTokens) -> torch.Tensor:
    """log s_i of each token's completion, with the gradient of log pi(o_it) per token `[n]`."""
    sums, lengths = row_sums((tokens.logps - tokens.old_logps).detach(), tokens)
    mean = (sums / lengths.clamp(min=1))[tokens.rows]
    return mean + tokens.logps - tokens.logps.detach()


@register_grpo_loss("gspo")
def loss(tokens: RolloutTokens, args: Any) -> torch.Tensor:
    return sequence_mean(token_losses(tokens, args, sequence_log_ratio(tokens)), tokens)
