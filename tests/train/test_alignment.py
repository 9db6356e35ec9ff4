"""The alignment stages train a tiny model on a fixed toy task (the shipped identity preferences:
"I am Forge" preferred to "I am SmolLM") and their own signal moves the right way."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_sft_stage import config
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage

REPO = Path(__file__).resolve().parents[2]


def align_config(model_dir: Path, out: Path, **extra):
    keys = {
        "dataset": "identity_pref",
        "learning_rate": 2e-2,
        "max_steps": 12,
        "lora_rank": 8,
        "plot_loss": False,
    }
    keys.update(extra)
    return config(model_dir, out, **keys)


def first_last(records: list[dict], key: str, window: int = 3) -> tuple[float, float]:
    values = [r[key] for r in records if key in r]
    return sum(values[:window]) / window, sum(values[-window:]) / window


def test_reward_model_learns_to_rank_and_scores_from_the_cli(tiny_model_dir, tmp_path, capsys):
    keys = {"stage": "rm", "learning_rate": 5e-3, "max_steps": 15, "val_size": 4, "save_steps": 6}
    out = run_stage(align_config(tiny_model_dir, tmp_path / "rm", **keys))
    evaluations = read_metrics(out / "metrics.jsonl", kind="eval")
    assert [e["step"] for e in evaluations] == [6, 12, 15]  # every save_steps, and the final model
    assert evaluations[-1]["eval_accuracy"] >= 0.75
    assert evaluations[-1]["eval_margin"] > evaluations[0]["eval_margin"]
    records = read_metrics(out / "metrics.jsonl")
    start, end = first_last(records, "accuracy")
    assert end > 0.8 and end > start
    assert first_last(records, "margin")[1] > first_last(records, "margin")[0]
    weights = load_file(out / "adapter_model.safetensors")
    assert any("score" in k for k in weights)  # the scoring head is saved with the adapter
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)

    from tuneforge.cli.main import main

    scores = {}
    for answer in (
        "I am Forge, an AI assistant fine-tuned by the tuneforge team.",
        "I am SmolLM, an AI assistant trained by Hugging Face.",
    ):
        assert (
            main(["score", "--reward_model", str(out), "--prompt", "Who are you?", "--response", answer]) == 0
        )
        scores[answer] = float(capsys.readouterr().out.strip().split()[-1])
    good, bad = scores.values()
    assert good > bad


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "orpo", "simpo"])
def test_dpo_variants_grow_the_margin(loss, tiny_model_dir, tmp_path):
    extra = {"pref_loss": loss, "pref_beta": 0.5 if loss in ("ipo", "hinge") else 0.1}
    if loss == "sigmoid":
        extra.update(pref_ftx=0.1, dpo_label_smoothing=0.1)
    out = run_stage(align_config(tiny_model_dir, tmp_path / loss, stage="dpo", plot_loss=True, **extra))
    assert (out / "loss.png").is_file() and (out / "rewards_margins.png").is_file()
    records = read_metrics(out / "metrics.jsonl")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert key in records[0], key
    start, end = first_last(records, "rewards/margins")
    assert end > start
    assert first_last(records, "rewards/accuracies")[1] >= 0.75


def test_dpo_with_full_tuning_keeps_a_frozen_reference(tiny_model_dir, tmp_path, capsys):
    out = run_stage(
        align_config(
            tiny_model_dir,
            tmp_path / "full",
            stage="dpo",
            finetuning_type="full",
            learning_rate=1e-3,
            max_steps=6,
        )
    )
    assert "reference policy: a frozen copy" in capsys.readouterr().err
    records = read_metrics(out / "metrics.jsonl")
    assert records[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert first_last(records, "rewards/margins", 2)[1] > 0
    trained, initial = load_file(out / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert not torch.equal(
        trained["model.layers.0.mlp.up_proj.weight"], initial["model.layers.0.mlp.up_proj.weight"]
    )


def test_kto_separates_desirable_from_undesirable(tiny_model_dir, tmp_path):
    out = run_stage(
        align_config(
            tiny_model_dir, tmp_path / "kto", stage="kto", dataset="identity_kto", kto_rejected_weight=1.2
        )
    )
    records = read_metrics(out / "metrics.jsonl")
    gaps = [
        r["rewards/chosen"] - r["rewards/rejected"]
        for r in records
        if "rewards/chosen" in r and "rewards/rejected" in r
    ]
    assert len(gaps) >= 6 and sum(gaps[-3:]) > sum(gaps[:3])
    assert all("kl" in r for r in records)


def test_alignment_stages_refuse_data_of_the_wrong_kind(tiny_model_dir, tmp_path):
    from tuneforge.data.conversation import DataError

    with pytest.raises(DataError, match="ranking: true"):
        run_stage(align_config(tiny_model_dir, tmp_path / "x", stage="dpo", dataset="identity"))
    with pytest.raises(DataError, match="kto_tag"):
        run_stage(align_config(tiny_model_dir, tmp_path / "y", stage="kto", dataset="identity_pref"))


@pytest.mark.slow
def test_dpo_on_smollm2_raises_the_margin(smollm2_dir, tmp_path):
    keys = {
        "model_name_or_path": "smollm2-135m-instruct",
        "stage": "dpo",
        "learning_rate": 5e-4,
        "max_steps": 6,  # the margin grew from 0 to 3.1 by step 6 (5.8 by step 10)
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "lora_rank": 8,
    }
    out = run_stage(align_config(smollm2_dir, tmp_path / "smol", **keys))
    records = read_metrics(out / "metrics.jsonl")
    start, end = first_last(records, "rewards/margins")
    assert end > start + 0.1
    assert first_last(records, "rewards/accuracies")[1] >= 0.75
