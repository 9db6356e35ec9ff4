"""Model FLOPs and MFU (tuneforge.train.flops): the shape by hand, the counted FLOPs of real training passes
against torch's own FLOP counter, and `mfu` in metrics.jsonl."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers import TINY, tiny_llama
from tests.train.test_sft_stage import config
from tuneforge.train.flops import ModelShape, WorkMeter, batch_positions, metering, model_shape
from tuneforge.train.linear_ce import linear_cross_entropy
from tuneforge.train.stages import run_stage
from tuneforge.train.trainer import labelled_outputs, split_decoder_and_head

H, FF, L, V = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"], 128


def kv_width() -> int:
    heads, kv = TINY["num_attention_heads"], TINY.get("num_key_value_heads", TINY["num_attention_heads"])
    return H // heads * kv


def test_the_shape_of_a_full_model_and_of_lora_by_hand():
    model = tiny_llama(V)
    per_layer = H * H * 2 + H * kv_width() * 2 + 3 * H * FF  # q, o; k, v; gate, up, down
    shape = model_shape(*split_decoder_and_head(model), model.config)
    assert shape.body == L * per_layer and shape.trained == shape.body == shape.backward_body
    assert shape.head == V * H and shape.attention == L * H and shape.backward_share == 1.0

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_llama(V), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    shape = model_shape(*split_decoder_and_head(lora), lora.config)
    adapters = L * 2 * (H * 2 + 2 * H) + L * (kv_width() * 2 - H * 2)  # A: H x 2; B: 2 x out (q: H, v: kv)
    assert shape.trained == adapters and shape.body == L * per_layer + adapters
    assert not shape.head_trained and shape.backward_body == shape.body


def test_pass_flops_by_hand():
    shape = ModelShape(
        body=10, trained=2, backward_body=8, backward_share=0.5, head=3, head_trained=False, attention=4
    )
    # forward: linear 2*10*5 = 100, attention 4*4*9 = 144, head 2*3*2 = 12
    assert shape.pass_flops(tokens=5, positions=9, labelled=2, backward=False) == 256
    # backward: inputs 2*8*5 = 80, weights 2*2*5 = 20, attention 2*144*0.5 = 144, head inputs 12
    assert shape.pass_flops(tokens=5, positions=9, labelled=2, backward=True) == 256 + 80 + 20 + 144 + 12


def test_positions_follow_padding_and_packing():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert batch_positions({"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": mask}) == (
        5,
        9,
    )
    packed = {
        "input_ids": torch.zeros(1, 5, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1]]),
    }
    assert batch_positions(packed) == (5, 1 + 2 + 3 + 1 + 2)


def matmul_flops(counter: FlopCounterMode) -> int:
    """torch's count of every matmul but attention's (SDPA counts the full square, not the causal half)."""
    return sum(
        n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" not in str(op)
    )


@pytest.mark.parametrize("method", ["full", "lora", "head frozen"])
def test_counted_flops_of_a_training_step_match_torchs_flop_counter(method):
    """One forward and backward of the loss as training runs it (chunked head): the meter's count equals
    torch's FLOP counter on every matmul, attention aside (counted by hand in the test above)."""
    model = tiny_llama(V)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
        model.get_input_embeddings().weight.requires_grad_(True)  # so every layer's input gradient is needed
    if method == "head frozen":
        model.get_output_embeddings().weight.requires_grad_(False)
    torch.manual_seed(0)
    ids = torch.randint(3, V, (2, 24))
    labels = ids.clone()
    labels[:, :10] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    meter = WorkMeter(
        dataclasses.replace(model_shape(*split_decoder_and_head(model), model.config), attention=0)
    )
    with FlopCounterMode(display=False) as counter, metering(meter):
        out = labelled_outputs(model, inputs, chunked=True)
        linear_cross_entropy(out.states, out.head, out.targets).backward()
    expected = matmul_flops(counter)
    assert expected > 0 and meter.flops == expected


def test_reference_passes_count_their_forward_only():
    model = tiny_llama(V)
    shape = model_shape(*split_decoder_and_head(model), model.config)
    ids = torch.randint(3, V, (1, 8))
    inputs = {"input_ids": ids, "labels": ids}
    meter = WorkMeter(shape)
    with metering(meter), torch.no_grad():
        labelled_outputs(model, inputs)
    assert meter.take() == shape.pass_flops(8, 36, 7, backward=False)
    with torch.no_grad():  # no meter active: nothing is counted anywhere
        labelled_outputs(model, inputs)
    assert meter.flops == 0


def test_metrics_report_mfu_against_the_measured_peak(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=3))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert 0 < record["mfu"] < 1, record
        assert record["model_tflops"] > 0
    from tuneforge.utils.paths import tuneforge_home

    peaks = json.loads((tuneforge_home() / "gemm-peak.json").read_text())
    assert any(key.startswith("cpu") and value > 1e9 for key, value in peaks.items())


def test_the_cached_peak_only_rises(tmp_path, monkeypatch):
    """A peak measured while other work shared the machine is low, and would make every later MFU too high:
    later measurements and faster training windows raise it, nothing lowers it."""
    from tuneforge.train import flops

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    cpu = torch.device("cpu")
    measured = iter([5e9, 2e9, 8e9])
    monkeypatch.setattr(flops, "measure_gemm_peak", lambda *args, **kwargs: next(measured))
    assert flops.gemm_peak(cpu, torch.float32, 8, 16) == 5e9  # measured once, then cached
    assert flops.gemm_peak(cpu, torch.float32, 8, 16) == 5e9
    assert flops.gemm_peak(cpu, torch.float32, 8, 16, fresh=True) == 5e9  # a busier measurement: kept 5e9
    assert flops.observed_rate(cpu, torch.float32, 8, 16, 6e9) == 6e9  # a window ran faster than the peak
    assert flops.gemm_peak(cpu, torch.float32, 8, 16) == 6e9
    assert flops.gemm_peak(cpu, torch.float32, 8, 16, fresh=True) == 8e9
    assert flops.observed_rate(cpu, torch.float32, 8, 16, 1e9) == 8e9
    assert json.loads((tmp_path / "gemm-peak.json").read_text()) == {
        f"cpu x{torch.get_num_threads()}|torch.float32|8x16": 8e9
    }
