"""`gradient_checkpointing_policy`: keep_attention runs each layer's attention once per step (not again in the
backward pass) and gives the losses and gradients of full recomputation; the estimate counts what it keeps."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import tiny_llama
from tests.train.test_estimate import cfg_for
from tests.train.test_sft_stage import config
from tuneforge.config import load_config
from tuneforge.model.packed_attention import NAME, register
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.estimate import estimate
from tuneforge.train.recompute import apply_policy, attention_ops, effective_policy
from tuneforge.train.stages import run_stage

LAYERS = 3
SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "deepspeed"


class CountAttention(TorchDispatchMode):
    """Counts calls of the fused attention kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func in attention_ops()
        return func(*args, **(kwargs or {}))


def step(policy: str | None, implementation: str = "sdpa", packed: bool = False):
    """One forward and backward pass of a tiny LoRA-less LLaMA (checkpointing with `policy`, or none): the
    loss, every gradient and the number of attention kernel calls."""
    register()
    model = tiny_llama(num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2)
    model.set_attn_implementation(implementation)
    model.train()
    if policy is not None:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        apply_policy(model, policy)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (2, 40), generator=generator)
    inputs = {"input_ids": ids, "labels": ids, "use_cache": False}
    if packed:  # two rows of 15 and 25 tokens in each sequence, as merged windows run
        inputs["position_ids"] = torch.cat([torch.arange(15), torch.arange(25)]).expand(2, -1)
    with CountAttention() as counter:
        loss = model(**inputs).loss
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, counter.calls


@pytest.mark.parametrize(
    ("implementation", "packed", "expanded"),
    [("sdpa", False, False), (NAME, True, False), (NAME, True, True)],
)
def test_keep_attention_runs_attention_once_with_the_same_loss_and_gradients(
    implementation, packed, expanded, monkeypatch
):
    if expanded:  # sdpa_packed's backward pass per query head (long rows on several threads), forced on
        from tuneforge.model import packed_attention

        monkeypatch.setattr(packed_attention, "EXPANDED_FROM", 1)
        monkeypatch.setattr(packed_attention, "expanded_backward_pays", lambda *_: True)
    plain_loss, plain_grads, plain_calls = step(None, implementation, packed)
    full_loss, full_grads, full_calls = step("full", implementation, packed)
    kept_loss, kept_grads, kept_calls = step("keep_attention", implementation, packed)
    calls = 4 if packed else 1  # sdpa_packed calls the kernel per packed row: 2 in each of 2 sequences
    assert plain_calls == LAYERS * calls, "the fused CPU kernel should run this attention"
    assert full_calls == 2 * plain_calls  # full recomputation runs attention again in the backward pass
    assert kept_calls == plain_calls
    assert torch.equal(kept_loss, full_loss) and torch.allclose(kept_loss, plain_loss, atol=1e-6)
    assert set(kept_grads) == set(full_grads) == set(plain_grads) and len(kept_grads) > 0
    for name, grad in full_grads.items():
        assert torch.allclose(kept_grads[name], grad, atol=1e-7, rtol=1e-5), name
        assert torch.allclose(plain_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_policy_applies_only_to_non_reentrant_checkpointed_layers():
    model = tiny_llama(num_hidden_layers=LAYERS)
    assert apply_policy(model, "keep_attention") == 0  # checkpointing off: nothing to change
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    assert apply_policy(model, "keep_attention") == 0  # reentrant checkpointing cannot keep chosen outputs
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert apply_policy(model, "full") == 0
    assert apply_policy(model, "keep_attention") == LAYERS
    assert apply_policy(model, "keep_attention") == 0  # already applied
    layer = model.model.layers[0]
    assert isinstance(layer._gradient_checkpointing_func, functools.partial)
    assert "context_fn" in layer._gradient_checkpointing_func.keywords
    with pytest.raises(ValueError, match="keep_attention, full"):
        apply_policy(model, "attention_only")


def test_training_runs_keep_attention_with_full_recomputation_losses(tiny_model_dir, tmp_path, capsys):
    runs = {}
    for policy in ("keep_attention", "full"):
        out = tmp_path / policy
        cfg = config(
            tiny_model_dir,
            out,
            max_steps=3,
            gradient_checkpointing=True,
            gradient_checkpointing_policy=policy,
        )
        run_stage(cfg)
        runs[policy] = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
        assert load_config(out / "run.yaml").training.gradient_checkpointing_policy == policy
    assert len(runs["full"]) == 3 and runs["keep_attention"] == pytest.approx(runs["full"], rel=1e-6)
    logged = capsys.readouterr()
    assert re.search(
        r"gradient checkpointing: 2 layers keep their attention outputs", logged.out + logged.err
    )


def test_estimate_counts_the_kept_attention_outputs(tiny_model_dir, tmp_path):
    keys = dict(per_device_train_batch_size=4, cutoff_len=128, gradient_checkpointing=True)
    kept = estimate(cfg_for(tiny_model_dir, tmp_path, **keys))
    full = estimate(cfg_for(tiny_model_dir, tmp_path, gradient_checkpointing_policy="full", **keys))
    heads, head_dim, layers = 4, 8, 2  # tests/helpers.tiny_llama: hidden 32
    expected = 4 * 128 * (heads * head_dim + heads) * 4 * layers
    assert kept.parts["activations"] - full.parts["activations"] == expected
    assert any("keep_attention" in a for a in kept.assumptions)
    assert not any("keep_attention" in a for a in full.assumptions)
    eager = cfg_for(tiny_model_dir, tmp_path, flash_attn="disabled", **keys)  # nothing fused to keep
    eager_full = cfg_for(
        tiny_model_dir, tmp_path, flash_attn="disabled", gradient_checkpointing_policy="full", **keys
    )
    assert estimate(eager).parts == estimate(eager_full).parts


def test_zero3_and_fsdp_recompute_whole_layers(tiny_model_dir, tmp_path):
    """Their weight gathers inside a layer cannot be replayed selectively (tests/distributed/test_sharding.py
    trains ZeRO-3 with checkpointing): the run and its estimate fall back to full, with a reason."""
    keys = dict(gradient_checkpointing=True, per_device_train_batch_size=4, cutoff_len=128)
    plain = cfg_for(tiny_model_dir, tmp_path, **keys)
    assert effective_policy(plain) == ("keep_attention", None)
    z2 = cfg_for(tiny_model_dir, tmp_path, deepspeed=str(SHIPPED / "ds_z2_config.json"), **keys)
    assert effective_policy(z2) == ("keep_attention", None)
    for sharded in (
        cfg_for(tiny_model_dir, tmp_path, deepspeed=str(SHIPPED / "ds_z3_config.json"), **keys),
        cfg_for(tiny_model_dir, tmp_path, fsdp="full_shard auto_wrap", **keys),
    ):
        policy, why = effective_policy(sharded)
        assert policy == "full" and "ZeRO-3 and FSDP" in why
        assert not any("keep_attention" in a for a in estimate(sharded).assumptions)
