"""The chunked output head: the same loss, log-probabilities and gradients as the plain head, without ever
keeping the `[n, vocab]` logits for the backward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuneforge.train import linear_ce
from tuneforge.train.linear_ce import fusable, linear_cross_entropy, linear_label_logps


def problem(bias: bool, head_grad: bool, n: int = 37, hidden: int = 8, vocab: int = 50):
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=bias).double()
    head.requires_grad_(head_grad)
    states = torch.randn(n, hidden, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))
    return head, states, targets


def grads(head, states):
    out = [states.grad.clone()]
    if head.weight.requires_grad:
        out.append(head.weight.grad.clone())
        if head.bias is not None:
            out.append(head.bias.grad.clone())
    states.grad = None
    head.zero_grad()
    return out


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("head_grad", [False, True])
def test_cross_entropy_and_its_gradients_equal_the_plain_head(bias, head_grad, monkeypatch):
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 50 * 16)  # 16 rows a chunk: three chunks of 37 rows
    head, states, targets = problem(bias, head_grad)
    plain = F.cross_entropy(head(states), targets, reduction="sum")
    (plain * 1.7).backward()
    expected = grads(head, states)
    fused = linear_cross_entropy(states, head, targets)
    (fused * 1.7).backward()  # the upstream gradient scales what forward formed
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    for got, want in zip(grads(head, states), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("head_grad", [False, True])
def test_label_logps_and_their_gradients_equal_the_plain_head(bias, head_grad, monkeypatch):
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 50 * 16)
    head, states, targets = problem(bias, head_grad)
    upstream = torch.randn(len(targets), dtype=torch.float64)  # e.g. DPO's weights per token
    plain = head(states).log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    (plain * upstream).sum().backward()
    expected = grads(head, states)
    fused = linear_label_logps(states, head, targets)
    (fused * upstream).sum().backward()
    assert torch.allclose(fused.double(), plain, atol=1e-6)
    for got, want in zip(grads(head, states), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def saved_sizes(fn) -> list[int]:
    """The element counts of every tensor autograd keeps for the backward pass of `fn()`."""
    sizes: list[int] = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


def test_the_logits_are_never_kept_for_backward():
    head, states, targets = problem(bias=False, head_grad=True, n=64, vocab=4000)
    logits = 64 * 4000
    plain = saved_sizes(lambda: F.cross_entropy(head(states), targets, reduction="sum"))
    assert max(plain) >= logits  # the plain head keeps [n, vocab]
    for fn in (linear_cross_entropy, linear_label_logps):  # at most the weight (or its gradient): [vocab, 8]
        assert max(saved_sizes(lambda fn=fn: fn(states, head, targets))) <= head.weight.numel() < logits / 4


def chunk_buffers(fn, rows: int, vocab: int) -> int:
    """How many tensors of at least one chunk's logits (`rows` x `vocab`) the ops run by `fn` create (in-place ops
    return their input and create none)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    created = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {
                id(a) for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)
            }
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and id(t) not in inputs and t.numel() >= rows * vocab:
                    created.append(func)
            return out

    with Count():
        fn()
    return len(created)


def test_each_chunk_allocates_its_logits_once(monkeypatch):
    """softmax, logsumexp and the gradient are formed in the logits' own buffer: one [rows, vocab] buffer per chunk
    (`torch.logsumexp` and `torch.softmax` would each allocate another)."""
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 4000 * 16)  # 16 rows a chunk: four chunks of 64 rows
    head, states, targets = problem(bias=False, head_grad=False, n=64, vocab=4000)
    head, states = head.float(), states.detach().float().requires_grad_()  # float32, as training runs here
    forward = chunk_buffers(lambda: linear_cross_entropy(states, head, targets), 16, 4000)
    assert forward == 4  # the loss and its gradient, computed together in the forward pass
    logps = linear_label_logps(states, head, targets)
    assert chunk_buffers(lambda: linear_label_logps(states, head, targets), 16, 4000) == 4
    assert chunk_buffers(lambda: logps.sum().backward(), 16, 4000) == 4  # each chunk recomputed once


def test_only_whole_plain_linear_heads_are_fused():
    assert fusable(torch.nn.Linear(4, 10))
    assert not fusable(torch.nn.Sequential(torch.nn.Linear(4, 10)))
    partitioned = torch.nn.Linear(4, 10)
    partitioned.weight.ds_id = 3  # a DeepSpeed ZeRO-3 partition: the chunked path would read a shard
    assert not fusable(partitioned)


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_training_with_the_chunked_head_follows_the_plain_heads_trajectory(
    stage, tiny_model_dir, tmp_path, monkeypatch
):
    """Full tuning (the head's weight trains too) with chunks of 40 positions: the same losses and weights."""
    from safetensors.torch import load_file

    from tests.train.test_sft_stage import config
    from tuneforge.train.callbacks import read_metrics
    from tuneforge.train.stages import run_stage

    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 40 * 49152)
    runs = {}
    for chunked in (True, False):
        out = tmp_path / f"chunked-{chunked}"
        keys = dict(finetuning_type="full", learning_rate=1e-3, chunked_cross_entropy=chunked, stage=stage)
        if stage == "dpo":
            keys.update(dataset="identity_pref", max_steps=4)
        run_stage(config(tiny_model_dir, out, **keys))
        runs[chunked] = ([r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r],
                         load_file(str(out / "model.safetensors")))  # fmt: skip
    (losses_a, weights_a), (losses_b, weights_b) = runs[True], runs[False]
    assert losses_a == pytest.approx(losses_b, abs=1e-5) and len(losses_a) >= 4
    assert max(float((weights_a[k] - weights_b[k]).abs().max()) for k in weights_a) < 1e-5
