"""GRPO's loss family as plug-ins: `grpo_loss_type: NAME` (stage grpo) picks the member registered under NAME.

Every member scores the same sampled tokens (`RolloutTokens`) with the clipped surrogate of PPO and the k3
KL penalty (`tuneforge.train.losses.clipped_surrogate`, `k3_kl`) and differs in how it weighs tokens and
sequences: the normalisation (grpo, bnpo, dapo, dr_grpo) or the level of the importance ratio (gspo). A
member is `loss(tokens: RolloutTokens, args) -> torch.Tensor`, registered with its paper's formula in its
docstring; `grpo.py` is the file to copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.config.plugins import family

if TYPE_CHECKING:
    import torch

GRPO_LOSSES = family("grpo_loss_type")


@dataclass
class RolloutTokens:
    """The completion tokens of one batch of rollouts, flattened row after row.

    Per token `[n]`: `logps` (the policy now, with gradient), `old_logps` (the policy that sampled them; the
    same values as `logps` on a rollout's first use), `ref_logps` (the reference; None without a KL term),
    `rows` (the completion each token belongs to). Per completion `[rows]`: `advantages`, and `counted`
    (False for completions left out of the loss: truncated ones with mask_truncated_completions, groups
    whose rewards do not vary with dynamic sampling).
    """

    logps: torch.Tensor
    old_logps: torch.Tensor
    ref_logps: torch.Tensor | None
    rows: torch.Tensor
    advantages: torch.Tensor
    counted: torch.Tensor


GRPOLoss = Callable[[RolloutTokens, Any], "torch.Tensor"]


def register_grpo_loss(name: str) -> Callable[[GRPOLoss], GRPOLoss]:
    return GRPO_LOSSES.register(name)


def grpo_loss(name: str, tokens: RolloutTokens, args: Any) -> torch.Tensor:
    """The loss `grpo_loss_type: name` gives for these tokens (names are checked when the config loads)."""
    return GRPO_LOSSES.get(name).target(tokens, args)


def token_losses(tokens: RolloutTokens, args: Any, log_ratio: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token loss `[n]`: the clipped surrogate with ratio exp(log_ratio) (default: token-level,
    logps - old_logps) plus grpo_beta x k3 KL to the reference; tokens of uncounted completions are 0."""
    from tuneforge.train.losses import clipped_surrogate, k3_kl

    if log_ratio is None:
        log_ratio = tokens.logps - tokens.old_logps
    high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    loss = clipped_surrogate(log_ratio, tokens.advantages[tokens.rows], args.epsilon, high)
    if tokens.ref_logps is not None and args.grpo_beta > 0:
        loss = loss + args.grpo_beta * k3_kl(tokens.logps, tokens.ref_logps)
    return loss * tokens.counted[tokens.rows]


def row_sums(values: torch.Tensor, tokens: RolloutTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of `values` per completion, number of tokens per completion), two `[rows]` tensors."""
    import torch

    size = tokens.advantages.shape[0]
    sums = torch.zeros(size, device=values.device, dtype=values.dtype).index_add(0, tokens.rows, values)
    ones = torch.ones_like(values)
    return sums, torch.zeros(size, device=values.device, dtype=values.dtype).index_add(0, tokens.rows, ones)
