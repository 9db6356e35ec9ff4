"""PPO: GAE, the clipped losses and the KL controller against hand computations; the stage raises a
verifiable toy reward, shares one base model with a LoRA reward model, and resumes."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_rl import small_vocab_model  # noqa: F401 - fixture
from tests.train.test_sft_stage import config
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.ppo import KLController, clipped_policy_loss, clipped_value_loss, gae
from tuneforge.train.stages import run_stage


def test_gae_by_hand():
    rewards, values = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.4, 0.8])
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.8
    d1 = 0.0 + gamma * 0.8 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    advantages, returns = gae(rewards, values, gamma, lam)
    assert advantages.tolist() == pytest.approx([a0, a1, a2])
    assert returns.tolist() == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.8])


def test_clipped_losses_by_hand():
    logps, old = torch.tensor([math.log(1.5), math.log(0.5)]), torch.zeros(2)
    adv = torch.tensor([1.0, -1.0])
    # ratio 1.5 with A=1: min(1.5, 1.2) -> -1.2; ratio 0.5 with A=-1: max(0.5, 0.8) -> 0.8
    assert clipped_policy_loss(logps, old, adv, 0.2).item() == pytest.approx((-1.2 + 0.8) / 2)
    values, old_values, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]), torch.tensor([0.0, 1.0])
    # row 0: unclipped (1-0)^2 = 1, clipped (0.7-0)^2 = 0.49 -> 1; row 1: (0-1)^2 both -> 1
    assert clipped_value_loss(values, old_values, returns, 0.2).item() == pytest.approx(0.5 * (1 + 1) / 2)


def test_adaptive_kl_controller():
    kl = KLController(0.1, target=6.0, horizon=100)
    kl.update(12.0, 10)  # error clipped to +0.2
    assert kl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    fixed = KLController(0.1, target=None)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1


def toy_prompts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say something {i}", "output": "aaaa"} for i in range(8)]
    (data / "prompts.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"prompts": {"file_name": "prompts.json"}}))
    return data


PPO_KEYS = {
    "stage": "ppo",
    "dataset": "prompts",
    "reward_funcs": "tests.train.test_rl:letter_a",
    "max_completion_length": 8,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "ppo_epochs": 2,
    "ppo_buffer_size": 1,
    "ppo_kl_coef": 0.01,
    "learning_rate": 3e-2,
    "lr_scheduler_type": "constant",
    "lora_rank": 8,
    "additional_target": "lm_head",
    "plot_loss": False,
}


def test_ppo_raises_the_mean_reward_of_a_toy_task(small_vocab_model, tmp_path):  # noqa: F811
    keys = {**PPO_KEYS, "dataset_dir": str(toy_prompts(tmp_path)), "max_steps": 30}
    out = run_stage(config(small_vocab_model, tmp_path / "run", **keys))
    records = read_metrics(out / "metrics.jsonl")
    rewards = [r["reward"] for r in records if "reward" in r]
    assert len(rewards) >= 8
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1
    assert all("policy_loss" in r and "value_loss" in r for r in records)
    assert all("kl" in r and "kl_coef" in r for r in records if "reward" in r)  # logged at each rollout
    head = load_file(out / "value_head.safetensors")
    assert head["weight"].abs().sum() > 0  # the critic learned
    assert (out / "adapter_model.safetensors").is_file() and not (out / "reward").exists()


def test_ppo_shares_the_base_with_a_lora_reward_model_and_resumes(tiny_model_dir, tmp_path, capsys):
    rm = run_stage(config(tiny_model_dir, tmp_path / "rm", stage="rm", dataset="identity_pref", max_steps=4))
    before = load_file(rm / "adapter_model.safetensors")
    keys = {
        **PPO_KEYS,
        "dataset": "identity",
        "reward_funcs": None,
        "reward_model": str(rm),
        "per_device_train_batch_size": 4,
        "ppo_buffer_size": 2,  # minibatches of 2 answers
        "additional_target": None,
        "max_steps": 4,
        "save_steps": 2,
    }
    keys = {k: v for k, v in keys.items() if v is not None}
    out = tmp_path / "ppo"
    with pytest.raises(RuntimeError, match="stop here"):
        from tuneforge.train import ppo

        real = ppo.PPOTrainer.training_loss

        def stop_at_three(self, model, inputs, num_items):
            if self.state.global_step == 2:
                raise RuntimeError("stop here")
            return real(self, model, inputs, num_items)

        ppo.PPOTrainer.training_loss = stop_at_three
        try:
            run_stage(config(tiny_model_dir, out, **keys))
        finally:
            ppo.PPOTrainer.training_loss = real
    assert "shares the base model as adapter 'reward'" in capsys.readouterr().err
    run_stage(config(tiny_model_dir, out, **keys))
    assert "resuming from" in capsys.readouterr().err
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["reward"]) for r in records if "reward" in r)
    after = load_file(rm / "adapter_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the reward model is only read
    assert (out / "checkpoint-4" / "value_head.safetensors").is_file()


def test_ppo_with_a_separate_full_reward_model(tiny_model_dir, tmp_path):
    rm = run_stage(
        config(
            tiny_model_dir,
            tmp_path / "rm",
            stage="rm",
            dataset="identity_pref",
            finetuning_type="full",
            max_steps=2,
        )
    )
    assert (rm / "model.safetensors").is_file()
    keys = {
        **{k: v for k, v in PPO_KEYS.items() if k not in ("reward_funcs", "additional_target")},
        "dataset": "identity",
        "reward_model": str(rm),
        "reward_model_type": "full",
        "per_device_train_batch_size": 4,
        "max_steps": 2,
    }
    out = run_stage(config(tiny_model_dir, tmp_path / "ppo", **keys))
    rewards = [r["reward"] for r in read_metrics(out / "metrics.jsonl") if "reward" in r]
    assert rewards and all(math.isfinite(r) for r in rewards)
