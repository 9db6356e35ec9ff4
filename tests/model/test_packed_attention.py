"""`sdpa_packed`: rows packed into one sequence attend row by row, with the same outputs and gradients as
transformers' SDPA with its block-diagonal mask, and as each row run on its own."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_llama
from tuneforge.model.packed_attention import NAME, register, usable

LENGTHS = [5, 9, 3, 7]


def packed_inputs(lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (1, sum(lengths)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    return {"input_ids": ids, "position_ids": positions}


def run(implementation: str, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and every parameter's gradient of the loss sum(logits²)/n on a tiny GQA LLaMA (4 query heads,
    2 key/value heads), always the same weights."""
    register()
    model = tiny_llama(num_attention_heads=4, num_key_value_heads=2)
    model.set_attn_implementation(implementation)
    logits = model(
        **inputs, use_cache=False
    ).logits  # as in training: transformers packs only without a cache
    (logits.pow(2).mean()).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_packed_rows_give_what_the_block_mask_gives():
    inputs = packed_inputs(LENGTHS)
    ours, our_grads = run(NAME, inputs)
    theirs, their_grads = run("sdpa", inputs)
    assert (ours - theirs).abs().max() < 1e-5
    for name, grad in our_grads.items():
        assert torch.allclose(grad, their_grads[name], atol=1e-6, rtol=1e-4), name


def test_each_packed_row_equals_the_row_alone():
    inputs = packed_inputs(LENGTHS, seed=1)
    ours, _ = run(NAME, inputs)
    start = 0
    for n in LENGTHS:
        alone, _ = run("sdpa", {"input_ids": inputs["input_ids"][:, start : start + n]})
        assert (ours[:, start : start + n] - alone).abs().max() < 1e-5
        start += n


def test_rows_of_a_batch_may_restart_at_different_places():
    """neat_packing's batches: each batch row has its own packed rows (padding is a sequence of its own)."""
    a, b = packed_inputs([6, 10]), packed_inputs([4, 4, 8], seed=2)
    inputs = {k: torch.cat([a[k], b[k]]) for k in a}
    ours, our_grads = run(NAME, inputs)
    theirs, their_grads = run("sdpa", inputs)
    assert (ours - theirs).abs().max() < 1e-5
    assert all(torch.allclose(g, their_grads[n], atol=1e-6, rtol=1e-4) for n, g in our_grads.items())


def test_padding_masks_and_generation_go_to_sdpa_unchanged():
    register()
    ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generation batches have
    outputs = {}
    for implementation in (NAME, "sdpa"):
        model = tiny_llama(num_attention_heads=4, num_key_value_heads=2).eval()
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
            answer = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        outputs[implementation] = (logits, answer)
    assert torch.allclose(outputs[NAME][0], outputs["sdpa"][0], atol=1e-5)
    assert torch.equal(outputs[NAME][1], outputs["sdpa"][1])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, True), ({"sliding_window": 4, "use_sliding_window": True}, False),
     ({"layer_types": ["sliding_attention", "full_attention"]}, False)],
)  # fmt: skip
def test_only_plain_causal_text_models_use_it(overrides, expected):
    from tests.helpers import tiny_llama_config

    config = tiny_llama_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    assert usable(config) is expected


def test_training_models_use_it_unless_sdpa_is_asked_for(tiny_model_dir):
    from tuneforge.config.schema import ModelArguments
    from tuneforge.model.loader import load_model

    args = ModelArguments(model_name_or_path=str(tiny_model_dir))
    assert load_model(args, for_training=True).config._attn_implementation == NAME
    assert load_model(args).config._attn_implementation == "sdpa"  # generation, export, scoring
    sdpa = args.model_copy(update={"flash_attn": "sdpa"})
    assert load_model(sdpa, for_training=True).config._attn_implementation == "sdpa"


def test_row_lengths_restart_at_zero_and_at_each_batch_row():
    from tuneforge.model.packed_attention import row_lengths

    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [3, 4, 0, 1, 2, 3]])  # the second row starts mid-sequence
    assert row_lengths(positions) == [3, 2, 1, 2, 4]


def test_the_row_lengths_are_read_once_per_forward_pass(monkeypatch):
    from tuneforge.model import packed_attention

    read = []
    original = packed_attention.row_lengths
    monkeypatch.setattr(
        packed_attention, "row_lengths", lambda positions: read.append(1) or original(positions)
    )
    run(NAME, packed_inputs(LENGTHS))  # a tiny LLaMA of two layers
    assert len(read) == 1


@pytest.mark.parametrize(
    ("units", "kv_units", "threads", "expected"),
    [
        (9, 3, 2, True),
        (9, 3, 1, False),
        (9, 3, 3, False),
        (9, 3, 16, True),
        (18, 6, 2, False),
        (9, 9, 2, False),
    ],
)
def test_the_backward_pass_runs_per_query_head_only_where_that_spreads_better(
    units, kv_units, threads, expected
):
    from tuneforge.model.packed_attention import expanded_backward_pays

    assert expanded_backward_pays(units, kv_units, threads) is expected


class CountBackwardHeads(torch.utils._python_dispatch.TorchDispatchMode):
    """The key heads each call of the CPU flash-attention backward kernel sees."""

    def __init__(self) -> None:
        super().__init__()
        self.key_heads: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
            self.key_heads.append(args[2].shape[1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("lengths", [LENGTHS, [31]], ids=["packed", "one-row"])
def test_long_rows_give_the_same_gradients_with_the_backward_pass_per_query_head(monkeypatch, lengths):
    """Forced on for rows this short: the tiny LLaMA's 2 key/value heads repeated for its 4 query heads."""
    from tuneforge.model import packed_attention

    inputs = packed_inputs(lengths, seed=4)
    with CountBackwardHeads() as grouped:
        theirs, their_grads = run(NAME, inputs)
    monkeypatch.setattr(packed_attention, "EXPANDED_FROM", 1)
    monkeypatch.setattr(packed_attention, "expanded_backward_pays", lambda *_: True)
    with CountBackwardHeads() as expanded:
        ours, our_grads = run(NAME, inputs)
    assert grouped.key_heads == [2] * 2 * len(lengths)  # two layers, each row once
    assert expanded.key_heads == [4] * 2 * len(lengths)
    assert torch.equal(ours, theirs)  # the same forward kernel on the same inputs
    masked, masked_grads = run("sdpa", inputs)  # and what transformers' SDPA computes
    assert (ours - masked).abs().max() < 1e-5
    for name, grad in our_grads.items():
        assert torch.allclose(grad, their_grads[name], atol=1e-6, rtol=1e-4), name
        assert torch.allclose(grad, masked_grads[name], atol=1e-6, rtol=1e-4), name
