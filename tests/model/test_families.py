"""Every supported model family: LoRA (lora_target: all), freeze and full each train a step on a tiny
random model built from the family's config; the right parameters move; an adapter reloads to the
same logits."""

import pytest
import torch

from tests.helpers import TINY
from tests.train.test_adapters import train_steps
from tuneforge.config import FinetuningArguments, ModelArguments
from tuneforge.model.adapters import apply_adapter
from tuneforge.model.adapters.lora import find_linear_targets

SMALL = {**TINY, "vocab_size": 128}

FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 8}),
    "mistral": ("MistralConfig", {"head_dim": 8}),
    "gemma": ("GemmaConfig", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", {"head_dim": 8, "query_pre_attn_scalar": 8}),
    "phi3": ("Phi3Config", {}),
    "olmo": ("OlmoConfig", {}),
    "mixtral": ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
        },
    ),
    "gpt_neox": ("GPTNeoXConfig", {"num_key_value_heads": None, "rotary_pct": 0.5}),
    "gpt2": ("GPT2Config", None),  # its own key names
}


def build(family: str, seed: int = 0):
    import transformers
    from transformers import AutoModelForCausalLM

    name, extra = FAMILIES[family]
    if extra is None:
        params = dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=128, pad_token_id=0)
    else:
        params = {k: v for k, v in {**SMALL, **extra}.items() if v is not None}
    torch.manual_seed(seed)
    config = getattr(transformers, name)(**params)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def changed(model, before) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_all_targets_train_and_reload_to_the_same_logits(family, tmp_path):
    from peft import PeftModel

    base = build(family)
    targets = find_linear_targets(base)
    assert len(targets) >= 3, targets  # attention and MLP projections at least (MoE: attention + router)
    model = apply_adapter(base, FinetuningArguments(lora_rank=4), ModelArguments())
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert wrapped == set(targets)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, steps=2, tmp_path=tmp_path / "train")
    moved = changed(model, before)
    assert moved and all("lora_" in n for n in moved)
    assert any("lora_B" in n for n in moved)
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.randint(3, 128, (2, 9))
    reloaded = PeftModel.from_pretrained(build(family), tmp_path / "adapter")
    # The weights must come back bit for bit...
    trained = dict(model.named_parameters())
    for name, param in reloaded.named_parameters():
        assert torch.equal(param, trained[name]), name
    # ...but two separately built modules may take different kernels or summation orders (GPT-2's Conv1D
    # wrapped by LoRA gives logits 7.5e-8 apart with transformers 5.24 and peft 0.21 from identical
    # weights), so the logits are compared up to float32 reassociation. Resume tests that reuse one
    # model object keep bit-exact comparisons.
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_freeze_trains_the_last_layer_only(family, tmp_path):
    model = apply_adapter(
        build(family),
        FinetuningArguments(finetuning_type="freeze", freeze_trainable_layers=1),
        ModelArguments(),
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".1." in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, steps=2, tmp_path=tmp_path)
    moved = changed(model, before)
    assert moved and moved <= trainable


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_trains_every_weight_matrix(family, tmp_path):
    model = apply_adapter(build(family), FinetuningArguments(finetuning_type="full"), ModelArguments())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, steps=2, tmp_path=tmp_path)
    moved = changed(model, before)
    matrices = {
        n for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n and "wte" not in n
    }
    # every matrix a token's gradient reaches moves (MoE: at least one expert per layer was routed to)
    assert len(moved & matrices) >= 0.9 * len(matrices), sorted(matrices - moved)
