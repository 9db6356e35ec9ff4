"""Online DPO: pairs sampled from the policy, ordered by a judge (reward functions or a reward model), DPO on
them; ties left out of the loss."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_rl import prompt_data, small_vocab_model  # noqa: F401 - fixture
from tests.train.test_sft_stage import config
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.online_dpo import order_pairs
from tuneforge.train.stages import run_stage
from tuneforge.utils.errors import UserError


def same_score(prompts, completions, **kwargs):
    """A judge that cannot tell any two answers apart."""
    return [0.5 for _ in completions]


def test_order_pairs_picks_the_higher_score_and_marks_ties():
    chosen, decisive = order_pairs(torch.tensor([0.2, 0.9, 3.0, 1.0, 0.5, 0.5]))
    assert chosen.tolist() == [1, 2, 4] and decisive.tolist() == [1.0, 1.0, 0.0]
    assert (chosen ^ 1).tolist() == [0, 3, 5]  # the rejected answer is the other one of the pair


def keys(data, **extra):
    return {
        "stage": "online_dpo", "dataset": "prompts", "dataset_dir": str(data),
        "reward_funcs": "tests.train.test_rl:letter_a", "max_completion_length": 8,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 2e-2,
        "lr_scheduler_type": "constant", "max_steps": 16, "lora_rank": 8, "additional_target": "lm_head",
        "pref_beta": 0.1, "plot_loss": False, **extra,
    }  # fmt: skip


def test_online_dpo_raises_the_judged_score(small_vocab_model, tmp_path):  # noqa: F811
    out = run_stage(config(small_vocab_model, tmp_path / "run", **keys(prompt_data(tmp_path))))
    records = read_metrics(out / "metrics.jsonl")
    scores = [(r["score/chosen"] + r["score/rejected"]) / 2 for r in records]
    assert len(scores) == 16
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.1
    assert all(r["score/chosen"] >= r["score/rejected"] for r in records)
    assert sum(r["rewards/margins"] for r in records[-4:]) > 0 and "ties" in records[0]
    pairs = [json.loads(line)["samples"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(pairs) == 16 and all([s["role"] for s in p] == ["chosen", "rejected"] for p in pairs)
    assert all(p[0]["reward"] >= p[1]["reward"] and p[0]["prompt"] == p[1]["prompt"] for p in pairs)


def test_pairs_the_judge_cannot_tell_apart_move_no_weight(small_vocab_model, tmp_path):  # noqa: F811
    extra = {"reward_funcs": "tests.train.test_online_dpo:same_score", "max_steps": 3}
    out = run_stage(config(small_vocab_model, tmp_path / "run", **keys(prompt_data(tmp_path), **extra)))
    assert all(r["ties"] == 1.0 for r in read_metrics(out / "metrics.jsonl"))
    lora_b = [v for k, v in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and all(float(v.abs().max()) == 0.0 for v in lora_b)  # still the zero initialisation


def test_online_dpo_without_a_judge_is_refused(small_vocab_model, tmp_path):  # noqa: F811
    with pytest.raises(UserError, match="needs a judge"):
        run_stage(config(small_vocab_model, tmp_path / "run", **keys(prompt_data(tmp_path), reward_funcs=[])))


def test_a_lora_reward_model_judges_the_pairs_and_is_only_read(tiny_model_dir, tmp_path, capsys):
    rm = run_stage(config(tiny_model_dir, tmp_path / "rm", stage="rm", dataset="identity_pref", max_steps=4))
    before = load_file(rm / "adapter_model.safetensors")
    extra = {"stage": "online_dpo", "reward_model": str(rm), "max_completion_length": 8, "max_steps": 2,
             "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}  # fmt: skip
    out = run_stage(config(tiny_model_dir, tmp_path / "odpo", **extra))
    assert "shares the base model as adapter 'reward'" in capsys.readouterr().err
    records = [r for r in read_metrics(out / "metrics.jsonl") if "score/chosen" in r]
    assert len(records) == 2 and all(r["score/chosen"] > r["score/rejected"] for r in records)
    after = load_file(rm / "adapter_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "reward").exists()
