"""`fused_lora`: PEFT's plain LoRA layers as one autograd node give PEFT's outputs and gradients, with and
without gradient checkpointing, and checkpointing's recomputation skips the last frozen matmul of each layer;
every case PEFT handles differently runs PEFT's own forward."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import tiny_llama
from tuneforge.model import fused_lora
from tuneforge.model.fused_lora import FusedLoraLinear
from tuneforge.model.packed_attention import NAME, register
from tuneforge.train.recompute import apply_policy

LAYERS = 2
INTERMEDIATE = 96


class CountMatmuls(TorchDispatchMode):
    """Counts the frozen down projections' forward matmuls (in the forward pass and in recomputation): inputs
    of INTERMEDIATE features times a down projection's weight (its input gradient multiplies HIDDEN features)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.weights = {
            m.base_layer.weight.data_ptr() for n, m in model.named_modules() if n.endswith("down_proj")
        }
        self.down = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a, b = args[-2], args[-1]
            self.down += a.shape[-1] == INTERMEDIATE and b.data_ptr() in self.weights
        return func(*args, **(kwargs or {}))


def lora_model(dropout: float = 0.0, **lora):
    register()
    model = tiny_llama(
        num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, intermediate_size=INTERMEDIATE
    )
    model.set_attn_implementation(NAME)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout, **lora)
    model = get_peft_model(model, config)
    with torch.no_grad():  # B starts at zero in PEFT: give it values so every gradient path carries something
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(hash(name) % 1000))
    model.enable_input_require_grads()
    model.train()
    return model


def step(model, packed: bool = True):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (2, 40), generator=generator)
    inputs = {"input_ids": ids, "labels": ids, "use_cache": False}
    if packed:
        inputs["position_ids"] = torch.cat([torch.arange(15), torch.arange(25)]).expand(2, -1)
    model.zero_grad()
    with CountMatmuls(model) as counter:
        loss = model(**inputs).loss
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, counter.down


def assert_same(a, b):
    (loss_a, grads_a, _), (loss_b, grads_b, _) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and any("lora_A" in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("checkpointing", [None, "full", "keep_attention"])
def test_fused_layers_give_peft_losses_and_gradients(checkpointing):
    model = lora_model()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        apply_policy(model, checkpointing)
    peft = step(model)
    assert fused_lora.install(model) == LAYERS * 7
    fused = step(model)
    assert_same(fused, peft)
    # the down projection's frozen matmul: once per layer in the forward pass, and again in checkpointing's
    # recomputation with PEFT's forward but not with the fused one (the recomputation stops before it)
    assert peft[2] == LAYERS * (2 if checkpointing else 1)
    assert fused[2] == LAYERS


def test_the_last_lora_layer_of_each_decoder_layer_keeps_its_low_rank_input():
    model = lora_model()
    fused_lora.install(model)
    keeping = [name for name, m in model.named_modules() if isinstance(m, FusedLoraLinear) and m._keep_ax]
    assert keeping == [f"base_model.model.model.layers.{i}.mlp.down_proj" for i in range(LAYERS)]
    fused_lora.uninstall(model)
    assert not any(isinstance(m, FusedLoraLinear) for m in model.modules())
    assert sum(type(m) is LoraLinear for m in model.modules()) == LAYERS * 7


class CountFused(TorchDispatchMode):
    """Counts in-place addmm calls: the fused layers' rank-r update (PEFT's forward has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.ops.aten.addmm_.default
        return func(*args, **(kwargs or {}))


def fused_calls(model, **inputs) -> int:
    ids = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(0))
    with CountFused() as counter, torch.no_grad():
        model(input_ids=ids, **inputs)
    return counter.calls


@pytest.mark.parametrize(
    "case",
    ["dropout", "dora", "adapters off", "merged", "autocast", "two adapters", "trainable base"],
)
def test_what_peft_runs_differently_keeps_peft_forward(case):
    model = lora_model(dropout=0.1 if case == "dropout" else 0.0, use_dora=case == "dora")
    fused_lora.install(model)
    model.eval()
    expected = step_logits(model)
    fused_lora.uninstall(model)
    plain = step_logits(model)
    fused_lora.install(model)
    torch.testing.assert_close(expected, plain, rtol=1e-5, atol=1e-6)
    assert fused_calls(model) == (0 if case in ("dropout", "dora") else LAYERS * 7)
    if case == "adapters off":
        with model.disable_adapter():
            assert fused_calls(model) == 0
    elif case == "merged":
        model.merge_adapter()
        assert fused_calls(model) == 0
    elif case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fused_calls(model) == 0
    elif case == "two adapters":
        model.add_adapter("other", LoraConfig(r=2, target_modules="all-linear"))
        model.base_model.set_adapter(["default", "other"])
        assert fused_calls(model) == 0
    elif case == "trainable base":
        model.base_model.model.model.layers[0].mlp.down_proj.base_layer.weight.requires_grad_(True)
        assert fused_calls(model) == LAYERS * 7 - 1


def step_logits(model) -> torch.Tensor:
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_training_with_fused_layers_follows_peft_trajectory(tiny_model_dir, tmp_path):
    """LoRA SFT with gradient checkpointing, fused_lora on and off: the same losses and adapter weights."""
    from safetensors.torch import load_file

    from tests.train.test_sft_stage import config
    from tuneforge.train.callbacks import read_metrics
    from tuneforge.train.stages import run_stage

    runs = {}
    for fused in (True, False):
        out = tmp_path / f"fused-{fused}"
        run_stage(
            config(tiny_model_dir, out, fused_lora=fused, gradient_checkpointing=True, lora_target="all")
        )
        runs[fused] = ([r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r],
                       load_file(str(out / "adapter_model.safetensors")))  # fmt: skip
    (losses_a, weights_a), (losses_b, weights_b) = runs[True], runs[False]
    assert losses_a == pytest.approx(losses_b, abs=1e-5) and len(losses_a) >= 4
    assert losses_a[-1] < losses_a[0]
    assert max(float((weights_a[k] - weights_b[k]).abs().max()) for k in weights_a) < 1e-5


@pytest.mark.parametrize(
    ("deepspeed", "fused"), [(None, True), ("ds_z2_config.json", True), ("ds_z3_config.json", False)]
)
def test_runs_fuse_lora_layers_except_under_zero3(deepspeed, fused, tiny_model_dir, tmp_path):
    from pathlib import Path

    from tests.train.test_sft_stage import config
    from tuneforge.train.runner import fuse_lora

    keys = (
        {"deepspeed": str(Path(__file__).resolve().parents[2] / "examples" / "deepspeed" / deepspeed)}
        if deepspeed
        else {}
    )
    cfg = config(tiny_model_dir, tmp_path, **keys)
    off = config(tiny_model_dir, tmp_path, fused_lora=False)
    assert fuse_lora(lora_model(), off) == 0
    assert fuse_lora(lora_model(), cfg) == (LAYERS * 7 if fused else 0)
