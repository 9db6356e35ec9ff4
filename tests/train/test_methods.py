"""Every fine-tuning method trains a tiny model: the fixed-batch loss falls and only the right parameters move."""

import json
import math

import pytest
import torch

from tests.helpers import tiny_llama
from tests.train.test_adapters import fixed_batch_loss, train_steps
from tests.train.test_sft_stage import config
from tuneforge.config import FinetuningArguments, ModelArguments, load_config
from tuneforge.model.adapters import apply_adapter
from tuneforge.model.loader import load_model
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage
from tuneforge.utils.errors import UserError

PEFT_CASES = {
    "dora": ({"use_dora": True}, "lora_"),
    "rslora": ({"use_rslora": True}, "lora_"),
    "pissa": ({"pissa_init": True, "pissa_iter": -1}, "lora_"),
    "oft": ({"finetuning_type": "oft"}, "oft_"),
    "prefix": ({"finetuning_type": "prefix", "num_virtual_tokens": 4}, "prompt_encoder"),
    "prefix-projection": (
        {"finetuning_type": "prefix", "num_virtual_tokens": 4, "prefix_projection": True},
        "prompt_encoder",
    ),
    "prompt": ({"finetuning_type": "prompt", "num_virtual_tokens": 4}, "prompt_encoder"),
    "p_tuning": ({"finetuning_type": "p_tuning", "num_virtual_tokens": 4}, "prompt_encoder"),
}


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("case", list(PEFT_CASES))
def test_peft_method_trains_its_own_parameters_only(case, tmp_path):
    keys, marker = PEFT_CASES[case]
    model = apply_adapter(tiny_llama(), FinetuningArguments(lora_rank=4, **keys), ModelArguments())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(marker in n for n in trainable)
    if case == "dora":  # the magnitude of each weight is learned too
        assert any("lora_magnitude_vector" in n for n in trainable)
    before, loss_before = snapshot(model), fixed_batch_loss(model)
    train_steps(model, steps=8, tmp_path=tmp_path)
    assert fixed_batch_loss(model) < loss_before
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) != (name in trainable), name


def test_rslora_scales_by_alpha_over_sqrt_rank():
    plain = apply_adapter(tiny_llama(), FinetuningArguments(lora_rank=4, lora_alpha=8), ModelArguments())
    rs = apply_adapter(
        tiny_llama(), FinetuningArguments(lora_rank=4, lora_alpha=8, use_rslora=True), ModelArguments()
    )
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert plain.get_submodule(q).scaling["default"] == 8 / 4
    assert rs.get_submodule(q).scaling["default"] == 8 / math.sqrt(4)


def test_pissa_starts_from_the_same_function():
    base = tiny_llama()
    ids = torch.randint(3, 128, (2, 10))
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    model = apply_adapter(
        base, FinetuningArguments(lora_rank=4, pissa_init=True, pissa_iter=-1), ModelArguments()
    )
    layer = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert layer.lora_B["default"].weight.abs().sum() > 0  # principal components, not zeros
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-4)


def test_additional_target_trains_and_saves_the_named_modules(tmp_path):
    model = apply_adapter(
        tiny_llama(), FinetuningArguments(lora_rank=4, additional_target="embed_tokens"), ModelArguments()
    )
    assert any("embed_tokens" in n and p.requires_grad for n, p in model.named_parameters())
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["embed_tokens"]
    with pytest.raises(UserError, match="additional_target"):
        apply_adapter(tiny_llama(), FinetuningArguments(additional_target="wte"), ModelArguments())


def test_continue_an_adapter_or_stack_a_new_one(tmp_path):
    first = apply_adapter(tiny_llama(), FinetuningArguments(lora_rank=4), ModelArguments())
    train_steps(first, steps=3, tmp_path=tmp_path / "t1")
    first.save_pretrained(tmp_path / "a1")
    trained = fixed_batch_loss(first)
    continued = apply_adapter(
        tiny_llama(),
        FinetuningArguments(lora_rank=4),
        ModelArguments(adapter_name_or_path=str(tmp_path / "a1")),
    )
    assert fixed_batch_loss(continued) == pytest.approx(trained, rel=1e-5)
    assert any(p.requires_grad for n, p in continued.named_parameters() if "lora_" in n)
    stacked = apply_adapter(
        tiny_llama(),
        FinetuningArguments(lora_rank=2, create_new_adapter=True),
        ModelArguments(adapter_name_or_path=str(tmp_path / "a1")),
    )
    assert fixed_batch_loss(stacked) == pytest.approx(trained, rel=1e-4)  # a1 merged, new adapter starts at 0
    ranks = {p.shape[0] for n, p in stacked.named_parameters() if "lora_A" in n}
    assert ranks == {2}


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tiny_model_dir, tmp_path):
    from tuneforge.model.adapters.lora import loraplus_optimizer

    cfg = config(tiny_model_dir, tmp_path / "run", loraplus_lr_ratio=16)
    model = apply_adapter(tiny_llama(), cfg.finetuning, cfg.model)
    optimizer = loraplus_optimizer(model, cfg.finetuning, cfg.training)
    by_lr = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            by_lr[id(param)] = group["lr"]
    names = {id(p): n for n, p in model.named_parameters()}
    a = {by_lr[i] for i in by_lr if "lora_A" in names[i]}
    b = {by_lr[i] for i in by_lr if "lora_B" in names[i]}
    assert a == {cfg.training.learning_rate} and b == {16 * cfg.training.learning_rate}
    out = run_stage(cfg)  # and the stage trains with it
    records = read_metrics(out / "metrics.jsonl")
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_stores_the_base_quantized_and_trains_lora(bits, tmp_path):
    import bitsandbytes as bnb

    # bitsandbytes quantizes 4-bit weights in blocks of 64 inputs, so layers need at least 64 of them
    tiny_llama(hidden_size=64, intermediate_size=128).save_pretrained(tmp_path / "base")
    args = ModelArguments(model_name_or_path=str(tmp_path / "base"), quantization_bit=bits)
    model = load_model(args, for_training=True)
    layer_type = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, layer_type)
    assert q_proj.weight.dtype == (torch.uint8 if bits == 4 else torch.int8)
    if bits == 4:  # two 4-bit values per byte
        assert q_proj.weight.numel() * 2 == q_proj.in_features * q_proj.out_features
    model = apply_adapter(model, FinetuningArguments(lora_rank=4), args)
    # (the CPU backend re-lays-out 4-bit weights on the first forward pass, so snapshot after one)
    loss_before = fixed_batch_loss(model)
    before = snapshot(model)
    train_steps(model, steps=6, tmp_path=tmp_path)
    assert fixed_batch_loss(model) < loss_before
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_qlora_refuses_what_cannot_work(tiny_model_dir):
    if not torch.cuda.is_available():  # tiny_model_dir has 32-wide layers
        with pytest.raises(UserError, match="multiples of 64 .*hidden_size=32"):
            load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), quantization_bit=4))
    with pytest.raises(Exception, match="QLoRA"):
        load_config(extra={"quantization_bit": 4, "finetuning_type": "full"})
    with pytest.raises(Exception, match="finetuning_type: full"):
        load_config(extra={"use_galore": True})


@pytest.mark.parametrize("optimizer", ["galore", "apollo"])
def test_low_rank_optimizers_train_full_weights(optimizer, tiny_model_dir, tmp_path):
    keys = {
        "finetuning_type": "full",
        f"use_{optimizer}": True,
        f"{optimizer}_rank": 4,
        f"{optimizer}_update_interval": 2,
        "learning_rate": 1e-2,
        "max_steps": 6,
    }
    out = run_stage(config(tiny_model_dir, tmp_path / "run", **keys))
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert losses[-1] < losses[0]
    from safetensors.torch import load_file

    trained = load_file(out / "model.safetensors")
    initial = load_file(tiny_model_dir / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[key], initial[key])


def test_stage_pt_packs_raw_text_and_learns_it(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    text = ["Forge is a tool that fine-tunes language models on a laptop. " * 3] * 12
    (data / "corpus.json").write_text(json.dumps([{"text": t} for t in text]))
    (data / "dataset_info.json").write_text(
        json.dumps({"corpus": {"file_name": "corpus.json", "columns": {"prompt": "text"}}})
    )
    keys = {"stage": "pt", "dataset": "corpus", "dataset_dir": str(data), "cutoff_len": 64, "max_steps": 6}
    out = run_stage(config(tiny_model_dir, tmp_path / "run", **keys))
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert losses[-1] < losses[0]


def test_neftune_adds_noise_to_training_forward_passes_only(tiny_model_dir, tmp_path):
    plain = run_stage(config(tiny_model_dir, tmp_path / "plain", max_steps=1))
    noisy = run_stage(config(tiny_model_dir, tmp_path / "noisy", max_steps=1, neftune_noise_alpha=50))
    a, b = (read_metrics(p / "metrics.jsonl")[0]["loss"] for p in (plain, noisy))
    assert a != b  # same weights and rows: only the embedding noise differs


def test_early_stopping_stops_when_eval_loss_stops_improving(tiny_model_dir, tmp_path):
    keys = {
        "val_size": 0.25,
        "save_steps": 1,
        "max_steps": 30,
        "learning_rate": 3.0,
        "early_stopping_steps": 1,
    }
    out = run_stage(config(tiny_model_dir, tmp_path / "run", **keys))
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h]
    assert state["global_step"] < 30
    assert evals[-1] >= min(evals[:-1])  # stopped because the last evaluation did not improve
    with pytest.raises(Exception, match="val_size"):
        load_config(extra={"early_stopping_steps": 2})


def test_qlora_stage_trains_and_saves_an_adapter(smollm2_tokenizer, tmp_path):
    base = tmp_path / "base"
    vocab = len(smollm2_tokenizer)
    tiny_llama(
        vocab, hidden_size=64, intermediate_size=128, pad_token_id=smollm2_tokenizer.pad_token_id
    ).save_pretrained(base)
    smollm2_tokenizer.save_pretrained(base)
    out = run_stage(config(base, tmp_path / "run", quantization_bit=4, max_steps=4))
    records = read_metrics(out / "metrics.jsonl")
    assert records[-1]["loss"] < records[0]["loss"]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["prompt", "p_tuning", "prefix"])
def test_prompt_method_adapters_load_for_chat(method, tiny_model_dir, tmp_path):
    from tuneforge.config import load_subset
    from tuneforge.inference.engine import InferenceEngine

    out = run_stage(
        config(tiny_model_dir, tmp_path / "run", finetuning_type=method, num_virtual_tokens=4, max_steps=2)
    )
    keys = [
        f"model_name_or_path={tiny_model_dir}",
        f"adapter_name_or_path={out}",
        "do_sample=false",
        "max_new_tokens=5",
    ]
    engine = InferenceEngine.from_config(load_subset(None, keys, ("model", "data", "generating")))
    assert type(engine.model).__name__.startswith("Peft")  # virtual tokens cannot be merged away
    ids = torch.tensor([engine.render([{"role": "user", "content": "hi"}])])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = engine.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=3,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
        for k, scores in enumerate(out.scores):  # generation sees the virtual tokens at every step
            seq = out.sequences[:, : ids.shape[1] + k]
            forward = engine.model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[:, -1]
            assert torch.allclose(scores, forward, atol=1e-4), k
    # the engine decodes such adapters through the patched generate(): same greedy tokens
    params = engine.sampling_params(max_new_tokens=3, temperature=0.0)
    assert engine.generate(ids[0].tolist(), params).text == engine.tokenizer.decode(
        out.sequences[0, ids.shape[1] :], skip_special_tokens=True
    )
    engine.close()


def test_a_pissa_run_leaves_an_adapter_for_the_original_base(tiny_model_dir, tmp_path):
    """PiSSA trains B A on a residual base W - B0 A0; the saved adapter is rewritten so that the original W plus
    it equals W - B0 A0 + B A (what was trained), which is what chat, serve and export then load."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cfg = config(tiny_model_dir, out, pissa_init=True, pissa_iter=-1, max_steps=4, save_steps=4, lora_alpha=8)
    run_stage(cfg)
    scale = 8 / 4
    start = load_file(str(out / "pissa_init" / "adapter_model.safetensors"))
    (last,) = out.glob("checkpoint-4")
    trained = load_file(str(last / "adapter_model.safetensors"))  # checkpoints keep the residual form
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    original = {n: p.detach().clone() for n, p in base.named_parameters()}
    merged = PeftModel.from_pretrained(base, out).merge_and_unload()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8  # [B, B0] [A; -A0]
    checked = 0
    for key, a in trained.items():
        if ".lora_A." not in key:
            continue
        b = trained[key.replace("lora_A", "lora_B")]
        a0, b0 = start[key], start[key.replace("lora_A", "lora_B")]
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        expected = original[name] + scale * (b @ a - b0 @ a0)
        assert (merged.state_dict()[name] - expected).abs().max() < 1e-5, name
        assert (b @ a - b0 @ a0).abs().max() > 1e-4  # training moved it
        checked += 1
    assert checked > 0
