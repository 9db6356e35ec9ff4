"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): no per-length averaging, a constant
denominator,

    L = - 1 / (G L_max) sum_i sum_t [ min(r_it A_i, clip(r_it, 1 - eps, 1 + eps_high) A_i) - beta KL_it ]

with G the counted completions and L_max = max_completion_length, so a wrong answer is not pushed down less
for being long. The paper also drops the std division of the advantage: use it with scale_rewards: none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.train.grpo_losses import RolloutTokens, register_grpo_loss, token_losses

if TYPE_CHECKING:
    import torch


@register_grpo_loss("dr_grpo")
def loss(tokens: RolloutTokens, args: Any) -> torch.Tensor:
    completions = tokens.counted.sum().to(tokens.logps.dtype).clamp(min=1)
    return token_losses(tokens, args).sum() / (completions * args.max_completion_length)
