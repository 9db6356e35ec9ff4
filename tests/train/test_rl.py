"""GRPO: its advantage and loss arithmetic, and a tiny model whose mean reward rises on a verifiable toy reward."""

import json
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import tiny_llama, tiny_tokenizer
from tests.train.test_sft_stage import config
from tuneforge.config import FinetuningArguments
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.grpo_losses import RolloutTokens, grpo_loss
from tuneforge.train.rewards import load_reward_funcs
from tuneforge.train.rewards.answer import exact_match
from tuneforge.train.rewards.format import make_format_reward
from tuneforge.train.rewards.length import make_length_reward
from tuneforge.train.rl import group_advantages
from tuneforge.train.stages import run_stage
from tuneforge.utils.errors import UserError


def letter_a(prompts, completions, **kwargs):
    """Toy verifiable reward: the share of the letter 'a' among the completion's letters."""
    return [sum(ch == "a" for ch in c) / max(1, sum(ch.isalpha() for ch in c)) for c in completions]


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, 4)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item()  # sample std of the first group
    assert adv[:4].tolist() == pytest.approx([x / (std + 1e-4) for x in (0.5, -0.5, -0.5, 0.5)])
    assert adv[4:].tolist() == [0.0] * 4  # a group with equal rewards teaches nothing


def test_grpo_loss_on_a_fresh_rollout_is_the_advantage_weighted_log_likelihood_plus_kl():
    """At the sampling policy (ratio 1) the clipped surrogate is -A log pi in value and gradient."""
    policy = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    reference = torch.tensor([-1.5, -2.0, -0.4])
    rows = torch.tensor([0, 0, 1])
    adv = torch.tensor([2.0, -1.0])
    args = SimpleNamespace(epsilon=0.2, epsilon_high=None, grpo_beta=0.1, max_completion_length=8)
    counted = torch.tensor([True, True])
    loss = grpo_loss("grpo", RolloutTokens(policy, policy.detach(), reference, rows, adv, counted), args)

    def k3(ref, pol):
        d = ref - pol
        return torch.exp(torch.tensor(d)).item() - d - 1

    row0 = ((-2.0 + 0.1 * k3(-1.5, -1.0)) + (-2.0 + 0.1 * k3(-2.0, -2.0))) / 2
    row1 = 1.0 + 0.1 * k3(-0.4, -0.5)
    assert loss.item() == pytest.approx((row0 + row1) / 2)
    loss.backward()
    # gradient of -A * logp (ratio is 1 at the sampled policy) plus the KL term
    assert policy.grad[2].item() == pytest.approx((1.0 + 0.1 * (1 - torch.exp(torch.tensor(0.1)).item())) / 2)


def test_built_in_rewards():
    assert exact_match(["q"], ["Paris."], answer=["paris"]) == [1.0]
    assert make_format_reward(r"<a>.*</a>")(["q"], ["<a>x</a>", "x"]) == [1.0, 0.0]
    assert make_length_reward(10)(["q"], ["x" * 10, "x" * 15, ""]) == [1.0, 0.5, 0.0]
    assert load_reward_funcs(["tests.train.test_rl:letter_a"], FinetuningArguments())[0] is letter_a
    with pytest.raises(UserError, match="unknown reward function 'nope'"):
        load_reward_funcs(["nope"], FinetuningArguments())
    with pytest.raises(UserError, match="reward_format_regex"):
        load_reward_funcs(["format"], FinetuningArguments())


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory):
    """A tiny model over a 300-token vocabulary, so a few steps can move what it samples."""
    path = tmp_path_factory.mktemp("tiny-vocab")
    tokenizer = tiny_tokenizer()
    tiny_llama(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def prompt_data(tmp_path):
    """A dataset folder of 8 prompts named `prompts` (the reward decides; the answers are unused)."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say something {i}", "output": "aaaa"} for i in range(8)]
    (data / "prompts.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"prompts": {"file_name": "prompts.json"}}))
    return data


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"grpo_loss_type": "bnpo"},
        {"grpo_loss_type": "dapo", "epsilon_high": 0.28, "grpo_dynamic_sampling": True},
        {"grpo_loss_type": "dr_grpo", "scale_rewards": "none", "learning_rate": 3e-2},
        {"grpo_loss_type": "gspo", "scale_rewards": "batch"},
    ],
    ids=["grpo", "bnpo", "dapo", "dr_grpo", "gspo"],
)
def test_grpo_raises_the_mean_reward(variant, small_vocab_model, tmp_path):
    data = prompt_data(tmp_path)
    keys = {
        "stage": "grpo",
        "dataset": "prompts",
        "dataset_dir": str(data),
        "reward_funcs": "tests.train.test_rl:letter_a",
        "num_generations": 8,
        "max_completion_length": 8,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "max_steps": 16,
        "lora_rank": 8,
        # a random tiny model's head decides which tokens it samples: train it with the LoRA layers
        "additional_target": "lm_head",
        "grpo_beta": 0.01,
        "plot_loss": False,
        **variant,
    }
    out = run_stage(config(small_vocab_model, tmp_path / "run", **keys))
    rewards = [r["reward"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(rewards) == 16
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1
    assert (out / "adapter_model.safetensors").is_file()
    records = read_metrics(out / "metrics.jsonl")
    assert all(r["rollout_tokens_per_second"] > 0 and 0 < r["rollout_share"] <= 1 for r in records)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == list(range(1, 17))  # one logging step each
    shown = samples[-1]["samples"]
    assert len(shown) == 4 and len({s["prompt"] for s in shown}) == 1  # one prompt's group
    assert [s["reward"] for s in shown] == pytest.approx(
        letter_a(None, [s["completion"] for s in shown]), abs=1e-4
    )


def test_a_rollout_is_reused_for_num_iterations_steps_with_moving_ratios(small_vocab_model, tmp_path):
    """num_iterations 2: steps 1-2 and 3-4 each train on one batch of rollouts (same rewards), and on the
    second use the policy has moved, so the importance ratios leave 1 and the loss differs."""
    data = prompt_data(tmp_path)
    keys = {
        "stage": "grpo", "dataset": "prompts", "dataset_dir": str(data), "reward_funcs": "tests.train.test_rl:letter_a",
        "num_generations": 4, "max_completion_length": 8, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "learning_rate": 5e-2, "lr_scheduler_type": "constant", "max_steps": 4,
        "lora_rank": 8, "additional_target": "lm_head", "grpo_beta": 0.0, "num_iterations": 2,
        "epsilon": 0.05, "plot_loss": False,
    }  # fmt: skip
    records = read_metrics(run_stage(config(small_vocab_model, tmp_path / "run", **keys)) / "metrics.jsonl")
    rewards = [r["reward"] for r in records]
    lengths = [r["completion_length"] for r in records]
    assert rewards[0] == rewards[1] and rewards[2] == rewards[3] and lengths[0] == lengths[1]
    assert (rewards[0], lengths[0]) != (rewards[2], lengths[2])  # a new rollout at step 3
    assert records[0]["clipped"] == 0.0  # ratio 1 on first use
    assert records[0]["loss"] != records[1]["loss"]


def test_repeated_batches_repeat_each_optimizer_steps_rows():
    from tuneforge.train.rl import RepeatedBatches

    assert list(RepeatedBatches([5, 3, 1, 0, 2], 2, 2)) == [5, 3, 5, 3, 1, 0, 1, 0, 2, 2]
    assert len(RepeatedBatches([5, 3, 1, 0, 2], 2, 3)) == 15


def test_vllm_rollouts_are_refused_in_a_sentence(small_vocab_model, tmp_path):
    keys = {"stage": "grpo", "dataset": "prompts", "dataset_dir": str(prompt_data(tmp_path)),
            "reward_funcs": "tests.train.test_rl:letter_a", "rollout_backend": "vllm"}  # fmt: skip
    with pytest.raises(UserError, match="rollout_backend': vllm is not available"):
        run_stage(config(small_vocab_model, tmp_path / "run", **keys))
