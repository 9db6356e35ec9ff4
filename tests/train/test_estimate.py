"""`tuneforge estimate`: exact parameter counts from a meta-device model (no weights read), the method's
trainable share, quantization, ZeRO sharding and offload, and the command's table."""

from __future__ import annotations

import json

import pytest

from tests.train.test_sft_stage import tiny_run_keys
from tuneforge.cli.main import main
from tuneforge.config import load_config
from tuneforge.train.estimate import GiB, estimate


def cfg_for(tiny_model_dir, tmp_path, **extra):
    return load_config(extra=tiny_run_keys(tiny_model_dir, tmp_path / "out", **extra))


@pytest.mark.parametrize("method", ["lora", "freeze", "full"])
def test_parameter_counts_equal_the_real_model_with_the_method_applied(method, tiny_model_dir, tmp_path):
    from tuneforge.model.adapters import apply_adapter, count_parameters
    from tuneforge.model.loader import load_model

    cfg = cfg_for(tiny_model_dir, tmp_path, finetuning_type=method)
    real = apply_adapter(load_model(cfg.model, for_training=True), cfg.finetuning, cfg.model)
    trainable, total = count_parameters(real)
    parts = estimate(cfg).parts
    assert parts["trainable weights"] == trainable * 4 == parts["gradients"]
    assert parts["weights"] + parts["trainable weights"] == total * 4
    assert parts["optimizer states"] == 2 * trainable * 4  # AdamW's two moments
    assert not (tmp_path / "out").exists()  # nothing written, no weights read


def test_more_tokens_more_activations_and_checkpointing_keeps_fewer(tiny_model_dir, tmp_path):
    small = estimate(cfg_for(tiny_model_dir, tmp_path, per_device_train_batch_size=1, cutoff_len=64)).parts
    large = estimate(cfg_for(tiny_model_dir, tmp_path, per_device_train_batch_size=4, cutoff_len=128)).parts
    assert large["activations"] == pytest.approx(8 * small["activations"], abs=8)
    assert large["logits"] == pytest.approx(8 * small["logits"], abs=8)
    checkpointed = estimate(
        cfg_for(
            tiny_model_dir,
            tmp_path,
            per_device_train_batch_size=4,
            cutoff_len=128,
            gradient_checkpointing=True,
        )
    )
    assert checkpointed.parts["activations"] < large["activations"]
    assert any("checkpointing" in a for a in checkpointed.assumptions)


def test_auto_checkpointing_turns_on_only_when_the_run_would_not_fit(tiny_model_dir, tmp_path, monkeypatch):
    from tuneforge.train import estimate as module
    from tuneforge.train.stages import with_checkpointing_decided

    keys = dict(per_device_train_batch_size=4, cutoff_len=128)
    off = estimate(cfg_for(tiny_model_dir, tmp_path, gradient_checkpointing=False, **keys))
    on = estimate(cfg_for(tiny_model_dir, tmp_path, gradient_checkpointing=True, **keys))
    auto = cfg_for(tiny_model_dir, tmp_path, **keys)
    assert auto.training.gradient_checkpointing == "auto"  # the default
    roomy = estimate(auto, available=2 * off.total)
    assert not roomy.checkpointing and roomy.parts == off.parts
    tight = estimate(auto, available=off.total)  # more than 90 % of it: on
    assert tight.checkpointing and tight.parts == on.parts
    assert "auto turned it on" in tight.assumptions[-1]

    monkeypatch.setattr(module, "available_memory", lambda device, processes=1: off.total)
    assert with_checkpointing_decided(auto).training.gradient_checkpointing is True
    lf_off = cfg_for(tiny_model_dir, tmp_path, disable_gradient_checkpointing=True, **keys)
    assert with_checkpointing_decided(lf_off).training.gradient_checkpointing is False
    monkeypatch.setattr(module, "available_memory", lambda device, processes=1: 10 * off.total)
    assert with_checkpointing_decided(auto).training.gradient_checkpointing is False


def test_eager_attention_adds_the_scores_and_says_so(tiny_model_dir, tmp_path):
    fused = estimate(cfg_for(tiny_model_dir, tmp_path, cutoff_len=128))
    eager = estimate(cfg_for(tiny_model_dir, tmp_path, cutoff_len=128, flash_attn="disabled"))
    heads, layers = 4, 2  # tests/helpers.tiny_llama
    expected = 4 * heads * 128**2 * 4 * 2 * layers  # batch x heads x seq^2 floats, scores and probabilities
    assert eager.parts["activations"] - fused.parts["activations"] == expected
    assert any("SDPA" in a for a in fused.assumptions) and any("eager" in a for a in eager.assumptions)


def test_zero_stages_shard_over_processes_and_offload_moves_to_cpu(tiny_model_dir, tmp_path):
    alone = estimate(cfg_for(tiny_model_dir, tmp_path, finetuning_type="full")).parts
    for stage, sharded in ((1, {"optimizer states"}), (2, {"optimizer states", "gradients"}),
                           (3, {"optimizer states", "gradients", "trainable weights"})):  # fmt: skip
        ds = tmp_path / f"z{stage}.json"
        ds.write_text(json.dumps({"zero_optimization": {"stage": stage}}))
        parts = estimate(
            cfg_for(tiny_model_dir, tmp_path, finetuning_type="full"), 4, deepspeed=str(ds)
        ).parts
        for name, value in parts.items():
            assert value == (alone[name] // 4 if name in sharded else alone[name]), (stage, name)
    ds = tmp_path / "offload.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    offloaded = estimate(cfg_for(tiny_model_dir, tmp_path, finetuning_type="full"), 2, deepspeed=str(ds))
    assert offloaded.parts["optimizer states"] == 0
    assert offloaded.offloaded["optimizer states"] == alone["optimizer states"] // 2


def test_a_4_bit_base_holds_its_linear_weights_in_about_an_eighth(tiny_model_dir, tmp_path):
    """bitsandbytes quantizes the decoder's linear layers, not the embeddings or the output head."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    linear = sum(
        p.numel()
        for n, p in base.named_parameters()
        if p.dim() == 2 and "embed" not in n and "lm_head" not in n
    )
    full = estimate(cfg_for(tiny_model_dir, tmp_path)).parts["weights"]
    quantized = estimate(cfg_for(tiny_model_dir, tmp_path, quantization_bit=4)).parts["weights"]
    assert full - quantized == pytest.approx(linear * (4 - 0.5 - 4 / 64), rel=0.01)


def test_the_command_prints_the_parts_and_whether_it_fits(tiny_model_dir, tmp_path, capsys):
    keys = tiny_run_keys(tiny_model_dir, tmp_path / "out")
    assert main(["estimate", *(f"{k}={v}" for k, v in keys.items())]) == 0
    out = capsys.readouterr().out
    for part in ("weights", "gradients", "optimizer states", "activations", "logits", "buffers", "total"):
        assert part in out
    assert "fits" in out and "GiB" in out
    assert estimate(cfg_for(tiny_model_dir, tmp_path)).total < GiB * 2


def test_preference_and_rl_micro_batches_hold_their_rows(tiny_model_dir, tmp_path):
    """A DPO or reward-model example is a chosen and a rejected row; a GRPO prompt is num_generations rows of
    prompt and answer. Counting batch x cutoff_len for them under-counted, and `gradient_checkpointing: auto`
    then left checkpointing off for runs that did not fit."""
    keys = dict(per_device_train_batch_size=2, cutoff_len=64, chunked_cross_entropy=False)
    sft = estimate(cfg_for(tiny_model_dir, tmp_path, **keys))
    for stage in ("dpo", "rm"):
        pairs = estimate(cfg_for(tiny_model_dir, tmp_path, stage=stage, dataset="identity_pref", **keys))
        assert pairs.parts["activations"] == pytest.approx(2 * sft.parts["activations"], abs=2)
        assert pairs.parts["logits"] == pytest.approx(2 * sft.parts["logits"], abs=2)
        assert any("a chosen and a rejected row" in a and "(4 x 64 tokens)" in a for a in pairs.assumptions)
    grpo = estimate(
        cfg_for(tiny_model_dir, tmp_path, stage="grpo", num_generations=3, max_completion_length=32, **keys)
    )
    assert grpo.parts["activations"] == pytest.approx(3 * 96 / 64 * sft.parts["activations"], abs=3)
    assert any("(6 x 96 tokens)" in a for a in grpo.assumptions)
    kto = estimate(cfg_for(tiny_model_dir, tmp_path, stage="kto", **keys))
    assert kto.parts["activations"] == sft.parts["activations"]  # KTO's KL rows run without gradients

    auto = cfg_for(tiny_model_dir, tmp_path, stage="dpo", dataset="identity_pref", **keys)
    room = int(sft.total / 0.9) + 1  # what an SFT run of the same batch needs fits; the DPO run does not
    assert not estimate(cfg_for(tiny_model_dir, tmp_path, **keys), available=room).checkpointing
    assert estimate(auto, available=room).checkpointing


@pytest.mark.parametrize(
    ("keys", "copy"),
    [
        ({"stage": "dpo", "finetuning_type": "full"}, True),
        ({"stage": "kto", "finetuning_type": "freeze"}, True),
        ({"stage": "dpo", "finetuning_type": "full", "pref_loss": "orpo"}, False),  # reference-free
        ({"stage": "dpo"}, False),  # LoRA: the policy with its adapter off
        ({"stage": "sft", "finetuning_type": "full"}, False),
    ],
)
def test_a_reference_copy_is_counted_where_the_stage_loads_one(keys, copy, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = {"dataset": "identity_pref"} if keys["stage"] == "dpo" else {}
    result = estimate(cfg_for(tiny_model_dir, tmp_path, **data, **keys))
    whole = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters()) * 4
    assert result.parts.get("reference weights", 0) == (whole if copy else 0)
    if copy:
        assert any("frozen copy" in a for a in result.assumptions)
