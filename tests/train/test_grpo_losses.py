"""GRPO's loss family (grpo_loss_type) against hand computations on three tokens of two completions, the
reward scaling variants, and the verifiable math reward."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tuneforge.train.grpo_losses import RolloutTokens, grpo_loss
from tuneforge.train.rl import group_advantages

# completion 0 has tokens 0 and 1, completion 1 has token 2
LOGPS = [-1.0, -2.0, -0.5]
OLD = [
    -1.5,
    -1.9,
    -0.1,
]  # token 0: ratio e^0.5 = 1.65 (clipped for A > 0); token 2: e^-0.4 = 0.67 (clipped for A < 0)
REF = [-1.5, -2.0, -0.4]
ADV = [2.0, -1.0]
ARGS = SimpleNamespace(epsilon=0.2, epsilon_high=0.28, grpo_beta=0.1, max_completion_length=4)


def tokens(counted=(True, True), ref=True) -> RolloutTokens:
    return RolloutTokens(
        logps=torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True),
        old_logps=torch.tensor(OLD, dtype=torch.float64),
        ref_logps=torch.tensor(REF, dtype=torch.float64) if ref else None,
        rows=torch.tensor([0, 0, 1]),
        advantages=torch.tensor(ADV, dtype=torch.float64),
        counted=torch.tensor(counted),
    )


def surrogate(log_ratio: float, a: float, low=0.2, high=0.28) -> float:
    r = math.exp(log_ratio)
    return -min(r * a, min(max(r, 1 - low), 1 + high) * a)


def k3(pol: float, ref: float) -> float:
    return math.exp(ref - pol) - (ref - pol) - 1


ROW = [0, 0, 1]
PER_TOKEN = [surrogate(LOGPS[t] - OLD[t], ADV[ROW[t]]) + 0.1 * k3(LOGPS[t], REF[t]) for t in range(3)]


def test_the_hand_numbers_exercise_both_clip_edges():
    assert surrogate(0.5, 2.0) == pytest.approx(-2 * 1.28)  # clip-higher: 1 + epsilon_high
    assert surrogate(-0.4, -1.0) == pytest.approx(0.8)  # 1 - epsilon for a negative advantage
    assert surrogate(-0.1, 2.0) == pytest.approx(-2 * math.exp(-0.1))  # inside the range


@pytest.mark.parametrize(
    "name, expected",
    [
        ("grpo", ((PER_TOKEN[0] + PER_TOKEN[1]) / 2 + PER_TOKEN[2]) / 2),  # per completion, then completions
        ("bnpo", sum(PER_TOKEN) / 3),  # per token of the batch
        ("dapo", sum(PER_TOKEN) / 3),  # per token of the global batch (one process here)
        ("dr_grpo", sum(PER_TOKEN) / (2 * 4)),  # completions x max_completion_length
    ],
)
def test_each_normalisation_against_a_hand_computation(name, expected):
    t = tokens()
    loss = grpo_loss(name, t, ARGS)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    # token 0 and token 2 are clipped: only the KL term moves them; token 1's surrogate gradient is -A r
    weight = {"grpo": 1 / 4, "bnpo": 1 / 3, "dapo": 1 / 3, "dr_grpo": 1 / 8}[name]
    kl_grad = lambda i: 0.1 * (1 - math.exp(REF[i] - LOGPS[i]))  # noqa: E731
    assert t.logps.grad[0].item() == pytest.approx(weight * kl_grad(0), rel=1e-9)
    assert t.logps.grad[1].item() == pytest.approx(weight * (-2 * math.exp(-0.1) + kl_grad(1)), rel=1e-9)


def test_gspo_clips_one_length_normalised_ratio_per_sequence():
    t = tokens()
    loss = grpo_loss("gspo", t, ARGS)
    log_s0 = ((LOGPS[0] - OLD[0]) + (LOGPS[1] - OLD[1])) / 2  # 0.2: e^0.2 = 1.22, inside the range
    log_s1 = LOGPS[2] - OLD[2]  # -0.4: clipped for A = -1
    row0 = surrogate(log_s0, 2.0) + 0.1 * (k3(LOGPS[0], REF[0]) + k3(LOGPS[1], REF[1])) / 2
    row1 = surrogate(log_s1, -1.0) + 0.1 * k3(LOGPS[2], REF[2])
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)
    loss.backward()
    # both tokens of completion 0 get the sequence ratio's gradient: -A s0 / |o_0| / G (plus their KL term)
    s0 = math.exp(log_s0)
    for i in (0, 1):
        expected = (-2.0 * s0 / 2 + 0.1 * (1 - math.exp(REF[i] - LOGPS[i])) / 2) / 2
        assert t.logps.grad[i].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["grpo", "bnpo", "dapo", "dr_grpo", "gspo"])
def test_an_uncounted_completion_adds_nothing_and_is_not_in_any_denominator(name):
    both = grpo_loss(name, tokens(counted=(True, False)), ARGS)
    alone = RolloutTokens(
        logps=torch.tensor(LOGPS[:2], dtype=torch.float64),
        old_logps=torch.tensor(OLD[:2], dtype=torch.float64),
        ref_logps=torch.tensor(REF[:2], dtype=torch.float64),
        rows=torch.tensor([0, 0]),
        advantages=torch.tensor(ADV[:1], dtype=torch.float64),
        counted=torch.tensor([True]),
    )
    assert both.item() == pytest.approx(grpo_loss(name, alone, ARGS).item(), rel=1e-12)


def test_symmetric_clipping_when_epsilon_high_is_unset():
    args = SimpleNamespace(epsilon=0.2, epsilon_high=None, grpo_beta=0.0, max_completion_length=4)
    loss = grpo_loss("bnpo", tokens(ref=False), args)
    expected = (surrogate(0.5, 2.0, high=0.2) + surrogate(-0.1, 2.0, high=0.2) + surrogate(-0.4, -1.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_reward_scaling_by_group_by_batch_or_not_at_all():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 7.0])
    centred = [0.5, -0.5, -0.5, 0.5, -0.5, -0.5, -0.5, 1.5]
    first, second = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item(), torch.tensor([5.0, 5, 5, 7]).std().item()
    group = group_advantages(rewards, 4, "group")
    assert group.tolist() == pytest.approx(
        [c / (first + 1e-4) for c in centred[:4]] + [c / (second + 1e-4) for c in centred[4:]]
    )
    batch = group_advantages(rewards, 4, "batch")
    assert batch.tolist() == pytest.approx([c / (rewards.std().item() + 1e-4) for c in centred])
    assert group_advantages(rewards, 4, "none").tolist() == pytest.approx(centred)


def test_weighted_rewards_add_up():
    from tests.helpers import tiny_tokenizer
    from tuneforge.train.rewards import score_completions

    tokenizer = tiny_tokenizer()
    completions = [tokenizer.encode("aaaa"), tokenizer.encode("bb")]

    def one(completions, **kwargs):
        return [1.0 for _ in completions]

    def letters(completions, **kwargs):
        return [float(len(c)) for c in completions]

    total = score_completions(
        [one, letters], tokenizer, [[1], [1]], completions, ["", ""], weights=[2.0, 0.5]
    )
    assert total.tolist() == pytest.approx([2.0 + 0.5 * 4, 2.0 + 0.5 * 2])


def test_the_accuracy_reward_compares_answers_as_numbers():
    pytest.importorskip("math_verify")
    from tuneforge.train.rewards.accuracy import accuracy

    completions = [
        "so the answer is \\boxed{72}.",
        "It costs 1000 dollars",
        "\\boxed{\\frac{1}{2}}",
        "about 71",
    ]
    answers = ["Natalia sold 48/2 = 24 clips in May.\n#### 72", "1,000", "0.5", "72"]
    assert accuracy([""] * 4, completions, answer=answers) == [1.0, 1.0, 1.0, 0.0]
    assert accuracy([""], ["Paris."], answer=["paris"]) == [1.0]  # not mathematics: compared as text
    # the question restated is not its answer (a policy learned to exploit that), a fraction still is
    restated = ["To calculate 9 + 14, we need to", "14 + 9 = 23.", "20 - 18 is 2", "It is 1/2"]
    assert accuracy([""] * 4, restated, answer=["23", "23", "2", "0.5"]) == [0.0, 1.0, 1.0, 1.0]
