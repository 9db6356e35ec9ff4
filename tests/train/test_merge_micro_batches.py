"""merge_micro_batches: the rows of a gradient accumulation window run as one packed sequence, with the same
losses, gradient norms and weights as one forward and backward per micro-batch."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_sft_stage import config
from tuneforge.data.collator import PaddingCollator, merge_batches
from tuneforge.data.tokenized import IGNORE_INDEX
from tuneforge.train import trainer as trainer_module
from tuneforge.train.stages import run_stage


def test_merged_rows_keep_their_tokens_labels_and_positions():
    collate = PaddingCollator(pad_token_id=0)
    first = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "sample_id": 3}])
    second = collate(
        [
            {"input_ids": [8, 9], "labels": [-100, 9], "sample_id": 1},
            {"input_ids": [10, 11, 12, 13], "labels": [10, -100, 12, 13], "sample_id": 4},
        ]
    )
    merged = merge_batches([first, second], max_tokens=9)
    assert merged["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13]]
    assert merged["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    # a row's first label never becomes a target of the row before it
    assert merged["labels"].tolist() == [
        [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9, IGNORE_INDEX, IGNORE_INDEX, 12, 13]
    ]
    targets = lambda b: int((b["labels"][:, 1:] != IGNORE_INDEX).sum())  # noqa: E731
    assert targets(merged) == targets(first) + targets(second)  # the loss's normaliser is unchanged
    assert merged["num_tokens"].tolist() == [9] and merged["sample_ids"].tolist() == [3, 1, 4]
    assert merge_batches([first, second], max_tokens=8) is None  # more than one micro-batch may hold
    assert merge_batches([{**first, "pixel_values": torch.zeros(1)}, second], max_tokens=99) is None
    left = {**first, "attention_mask": torch.tensor([[0, 1, 1]])}
    assert merge_batches([left, second], max_tokens=99) is None


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("batch", "accumulation"), [(1, 4), (2, 4), (2, 1)])
def test_merged_windows_train_exactly_as_separate_micro_batches(
    batch, accumulation, tiny_model_dir, tmp_path, monkeypatch
):
    """(2, 1): a window of one micro-batch of two rows runs them packed, without their padding."""
    calls = []
    merge = trainer_module.merge_batches
    monkeypatch.setattr(trainer_module, "merge_batches", lambda *a: calls.append(1) or merge(*a))
    keys = dict(max_steps=4, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation)
    run_stage(config(tiny_model_dir, tmp_path / "separate", merge_micro_batches=False, **keys))
    assert not calls
    run_stage(config(tiny_model_dir, tmp_path / "merged", **keys))  # the default
    assert len(calls) == 4  # every window merged
    a, b = records(tmp_path / "separate"), records(tmp_path / "merged")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-5)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], abs=1e-5)
        assert y["tokens_seen"] == x["tokens_seen"]
    wa = load_file(str(tmp_path / "separate" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "merged" / "adapter_model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert max(float(wa[k].abs().max()) for k in wa if "lora_B" in k) > 1e-4  # it trained


@pytest.mark.parametrize(
    ("pref_loss", "batch", "accumulation", "ftx"),
    [("sigmoid", 1, 3, 0.5), ("orpo", 2, 2, 0.0)],
)
def test_merged_dpo_windows_train_exactly_as_separate_micro_batches(
    pref_loss, batch, accumulation, ftx, tiny_model_dir, tmp_path, monkeypatch
):
    """DPO's pairs: every chosen row, then every rejected row, as one packed policy pass and one reference
    pass per window; each pair's loss weighted as in its micro-batch's mean."""
    from tuneforge.train import preference

    calls = []
    merge = preference.merge_batches
    monkeypatch.setattr(preference, "merge_batches", lambda *a: calls.append(1) or merge(*a))
    keys = dict(
        stage="dpo", dataset="identity_pref", pref_loss=pref_loss, pref_ftx=ftx, max_steps=2,
        per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
    )  # fmt: skip
    run_stage(config(tiny_model_dir, tmp_path / "separate", merge_micro_batches=False, **keys))
    assert not calls
    run_stage(config(tiny_model_dir, tmp_path / "merged", **keys))
    assert len(calls) == 2
    a, b = records(tmp_path / "separate"), records(tmp_path / "merged")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "grad_norm", "rewards/margins", "logps/chosen"):
            assert y[key] == pytest.approx(x[key], abs=1e-4), key
        assert y["tokens_seen"] == x["tokens_seen"]
    wa = load_file(str(tmp_path / "separate" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "merged" / "adapter_model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert max(float(wa[k].abs().max()) for k in wa if "lora_B" in k) > 1e-4


@pytest.mark.parametrize("stage", ["rm", "kto"])
def test_reward_model_and_kto_batches_are_never_merged(stage, tiny_model_dir, tmp_path, monkeypatch):
    from tuneforge.train import preference

    calls = []
    monkeypatch.setattr(trainer_module, "merge_batches", lambda *a: calls.append(1))
    monkeypatch.setattr(preference, "merge_batches", lambda *a: calls.append(1))
    dataset = "identity_kto" if stage == "kto" else "identity_pref"
    keys = dict(stage=stage, dataset=dataset, max_steps=1, gradient_accumulation_steps=2)
    run_stage(config(tiny_model_dir, tmp_path / stage, merge_micro_batches=True, **keys))
    assert not calls
