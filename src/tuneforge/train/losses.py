"""Preference losses as plain functions of per-sequence log-probabilities, so each is checked
against its formula on small tensors (tests/train/test_losses.py).

Shapes: every `*_logps` is `[batch]`: the summed log-probability of a sequence's answer tokens;
`*_avg` the same divided by the answer length (ORPO and SimPO normalise by length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PreferenceLoss:
    loss: torch.Tensor  # [batch]
    chosen_rewards: torch.Tensor  # [batch], detached
    rejected_rewards: torch.Tensor  # [batch], detached


def ranking_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Reward-model loss: -log sigmoid(r_chosen - r_rejected), per pair."""
    return -F.logsigmoid(chosen_scores - rejected_scores)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    margin_loss: Callable[[torch.Tensor], torch.Tensor],
) -> PreferenceLoss:
    """A reference-based preference loss: `margin_loss(h)` of the log-ratio margin
    h = (log pi/ref)(chosen) - (log pi/ref)(rejected), `[batch]`; rewards are beta x each log-ratio."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    loss = margin_loss(chosen_ratio - rejected_ratio)
    return PreferenceLoss(loss, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def sigmoid_margin(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), with conservative label smoothing eps: -(1-eps) log s(beta h) - eps log s(-beta h)."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_margin(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023): (h - 1/(2 beta))^2."""
    return (h - 1 / (2 * beta)) ** 2


def hinge_margin(h: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC hinge (Zhao et al. 2023): max(0, 1 - beta h)."""
    return torch.relu(1 - beta * h)


def simpo_loss(
    chosen_avg: torch.Tensor,
    rejected_avg: torch.Tensor,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """SimPO (Meng et al. 2024), no reference model: -log s(beta (avg_c - avg_r) - gamma), smoothed like DPO."""
    logits = beta * (chosen_avg - rejected_avg) - gamma
    loss = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return PreferenceLoss(loss, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())


def orpo_loss(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, beta: float) -> PreferenceLoss:
    """ORPO (Hong et al. 2024), no reference model: NLL(chosen) - beta log s(log odds_c - log odds_r),
    with odds(y) = p / (1 - p) and p = exp(average log-probability of y)."""
    log_odds = (chosen_avg - rejected_avg) - (
        torch.log1p(-torch.exp(chosen_avg).clamp(max=1 - 1e-6))
        - torch.log1p(-torch.exp(rejected_avg).clamp(max=1 - 1e-6))
    )
    loss = -chosen_avg - beta * F.logsigmoid(log_odds)
    return PreferenceLoss(loss, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_estimate: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024), per example: with r = log pi/ref(y|x) and z0 = max(0, KL) (no gradient),
    desirable: w_d (1 - s(beta (r - z0))), undesirable: w_u (1 - s(beta (z0 - r)))."""
    z0 = kl_estimate.detach().clamp(min=0)
    r = policy_logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable.bool(), good, bad)


def clipped_surrogate(
    log_ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float, epsilon_high: float
) -> torch.Tensor:
    """PPO's clipped surrogate, as a loss per token `[n]` (log_ratio and advantages both `[n]`):

        -min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A),   r = exp(log_ratio)

    At the sampling policy (r = 1 with gradient) its gradient is -A d(log pi); beyond the clip range on the
    side the advantage favours, none (the asymmetric range is DAPO's clip-higher)."""
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def k3_kl(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per sampled token `[n]`: exp(ref - pi) - (ref - pi) - 1,
    never negative and unbiased under samples of pi."""
    delta = reference - policy
    return torch.exp(delta) - delta - 1
