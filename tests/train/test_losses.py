"""Each preference loss against its formula, computed by hand on small numbers."""

import math

import pytest
import torch

from tuneforge.train.losses import (
    dpo_loss,
    hinge_margin,
    ipo_margin,
    kto_loss,
    orpo_loss,
    ranking_loss,
    sigmoid_margin,
    simpo_loss,
)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


T = torch.tensor
# log-probabilities of two pairs: policy chosen/rejected, reference chosen/rejected
PC, PR, RC, RR = T([-10.0, -4.0]), T([-12.0, -3.0]), T([-11.0, -4.5]), T([-11.5, -3.5])
H = [(-10 + 11) - (-12 + 11.5), (-4 + 4.5) - (-3 + 3.5)]  # [1.5, 0.0]


def test_ranking_loss():
    assert ranking_loss(T([2.0, -1.0]), T([0.5, 1.0])).tolist() == pytest.approx(
        [-logsig(1.5), -logsig(-2.0)]
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_sigmoid(smoothing):
    out = dpo_loss(PC, PR, RC, RR, 0.1, lambda h: sigmoid_margin(h, 0.1, label_smoothing=smoothing))
    expected = [-(1 - smoothing) * logsig(0.1 * h) - smoothing * logsig(-0.1 * h) for h in H]
    assert out.loss.tolist() == pytest.approx(expected)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1 * 1.0, 0.1 * 0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([0.1 * -0.5, 0.1 * 0.5])


def test_dpo_ipo_and_hinge():
    ipo = dpo_loss(PC, PR, RC, RR, 0.5, lambda h: ipo_margin(h, 0.5)).loss
    assert ipo.tolist() == pytest.approx([(h - 1 / (2 * 0.5)) ** 2 for h in H])
    hinge = dpo_loss(PC, PR, RC, RR, 0.5, lambda h: hinge_margin(h, 0.5)).loss
    assert hinge.tolist() == pytest.approx([max(0.0, 1 - 0.5 * h) for h in H])


def test_simpo():
    out = simpo_loss(T([-0.5, -1.0]), T([-1.5, -0.8]), beta=2.0, gamma=0.5)
    assert out.loss.tolist() == pytest.approx([-logsig(2.0 * 1.0 - 0.5), -logsig(2.0 * -0.2 - 0.5)])
    assert out.chosen_rewards.tolist() == pytest.approx([-1.0, -2.0])


def test_orpo():
    c, r = T([-0.5]), T([-1.5])
    pc, pr = math.exp(-0.5), math.exp(-1.5)
    log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
    out = orpo_loss(c, r, beta=0.1)
    assert out.loss.item() == pytest.approx(0.5 - 0.1 * logsig(log_odds))


def test_kto():
    policy, ref = T([-5.0, -5.0, -2.0]), T([-6.0, -4.0, -2.5])
    desirable = T([1, 0, 1])
    kl = T(0.2)
    out = kto_loss(policy, ref, desirable, kl, beta=0.5, desirable_weight=1.0, undesirable_weight=1.5)
    r = [1.0, -1.0, 0.5]
    expected = [1 - sig(0.5 * (r[0] - 0.2)), 1.5 * (1 - sig(0.5 * (0.2 - r[1]))), 1 - sig(0.5 * (r[2] - 0.2))]
    assert out.tolist() == pytest.approx(expected)
    # a negative KL estimate counts as zero, and no gradient flows through it
    kl, policy = T(-3.0, requires_grad=True), policy.clone().requires_grad_(True)
    loss = kto_loss(policy, ref, desirable, kl, beta=0.5)
    assert loss.tolist() == pytest.approx(kto_loss(policy, ref, desirable, T(0.0), beta=0.5).tolist())
    loss.sum().backward()
    assert kl.grad is None and policy.grad is not None
