"""Model FLOPs of training passes and the machine's measured matmul peak: metrics.jsonl's `mfu`.

Model FLOPs count what the computation needs (as PaLM's MFU does), not what a kernel happens to run:

- a linear layer with P weights: 2P per token forward; backward 2P for the gradient of its input (in the layers
  the backward pass runs through: from the lowest trained layer up) and 2P more for its weight gradient when
  it is trained (LoRA: the adapters only, so LoRA costs about 4P per token where full tuning costs 6P);
- causal attention: a token at position p attends to p + 1 positions, 4 w (p + 1) forward per layer (QKᵀ and
  AV, w = heads x head_dim) and twice that backward;
- the output head (vocab x hidden) on the labelled tokens only: the tokens whose prediction a loss needs;
- a pass without gradients (the reference model of DPO and KTO): its forward only.

Not counted: gradient checkpointing's recomputation (that would be hardware FLOPs), the rollouts of online stages
(generation), the vision tower of a vision-language model, and experts a token is not routed to (the linear
layers of a mixture-of-experts model are scaled by experts per token / experts).

    mfu = model FLOPs of a logging window / (its wall seconds x peak FLOP/s)

The peak is measured, not looked up: the best of float32 (or the training dtype's) matmuls shaped like the
model's projections, timed on the training device, cached per machine in $TUNEFORGE_HOME/gemm-peak.json. The
cache keeps the highest value seen: a measurement slowed by other work on the machine would make every later
MFU too high, so it is raised by later measurements and by any training window that ran faster than it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.utils.paths import tuneforge_home

PEAKS_FILE = "gemm-peak.json"
MAX_REPS = 30  # matmuls timed per shape
_SKIPPED = re.compile(r"vision|visual|multi_modal_projector|image_newline")


@dataclass(frozen=True)
class ModelShape:
    """The parts of a causal LM that decide its FLOPs per token."""

    body: int  # weights of the decoder's linear layers (attention, MLP, adapters), per token routed
    trained: int  # of those, the trained ones
    backward_body: int  # of those, in the layers the backward pass runs through
    backward_share: float  # share of the layers the backward pass runs through
    head: int  # vocab x hidden
    head_trained: bool
    attention: int  # layers x heads x head_dim

    def pass_flops(self, tokens: int, positions: int, labelled: int, backward: bool) -> int:
        """FLOPs of one pass over `tokens` real tokens whose positions + 1 sum to `positions`, with the head on
        `labelled` of them; `backward`: the gradient pass too."""
        linear, attention, head = (
            2 * self.body * tokens,
            4 * self.attention * positions,
            2 * self.head * labelled,
        )
        flops = linear + attention + head
        if backward:
            flops += 2 * self.backward_body * tokens + 2 * self.trained * tokens
            flops += int(2 * attention * self.backward_share) + head * (2 if self.head_trained else 1)
        return flops


def model_shape(decoder: torch.nn.Module, head: torch.nn.Module | None, config: Any) -> ModelShape:
    """The FLOP shape of `decoder` (the transformer body, adapters applied) and its output `head`."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    experts = getattr(text, "num_local_experts", None) or getattr(text, "num_experts", None)
    routed = getattr(text, "num_experts_per_tok", None)
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    body = trained = 0
    per_layer: dict[int, int] = {}
    lowest: int | None = None
    for name, module in decoder.named_modules():
        if not isinstance(module, torch.nn.Linear) or _SKIPPED.search(name) or module is head:
            continue
        weights = module.in_features * module.out_features
        if experts and routed and ".experts." in name:
            weights = weights * routed // experts
        body += weights
        found = re.search(r"\.layers\.(\d+)\.", f".{name}")
        layer = int(found.group(1)) if found else 0
        per_layer[layer] = per_layer.get(layer, 0) + weights
        if module.weight.requires_grad:
            trained += weights
            lowest = layer if lowest is None else min(lowest, layer)
    embeddings = getattr(decoder, "get_input_embeddings", lambda: None)()
    weight = getattr(embeddings, "weight", None)
    if weight is not None and weight.requires_grad:
        lowest = 0
    if lowest is None:  # nothing in the body trains (e.g. the head only, or a prompt method)
        lowest = layers
    backward_body = sum(w for layer, w in per_layer.items() if layer >= lowest)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else 0)
    head_weights = head.in_features * head.out_features if isinstance(head, torch.nn.Linear) else 0
    return ModelShape(
        body=body,
        trained=trained,
        backward_body=backward_body,
        backward_share=(layers - lowest) / layers if layers else 0.0,
        head=head_weights,
        head_trained=bool(head is not None and head.weight.requires_grad),
        attention=layers * heads * int(head_dim),
    )


def batch_positions(inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(real tokens, sum over them of position + 1) of a batch of model inputs: the attention work."""
    ids = inputs.get("input_ids")
    mask = inputs.get("attention_mask")
    positions = inputs.get("position_ids")
    if mask is not None and mask.dim() == 2:
        real = mask.bool()
    elif ids is not None:
        real = torch.ones_like(ids, dtype=torch.bool)
    else:
        return 0, 0
    if positions is None or positions.dim() != 2 or positions.shape != real.shape:
        positions = real.long().cumsum(1) - 1  # left or right padding alike
    return int(real.sum()), int(((positions + 1) * real).sum())


@dataclass
class WorkMeter:
    """Model FLOPs of the training passes reported while it is active (see `metering`)."""

    shape: ModelShape
    flops: int = 0  # since the last `take`
    total: int = 0  # since the meter was made

    def add(self, inputs: dict[str, torch.Tensor], labelled: int) -> None:
        tokens, positions = batch_positions(inputs)
        flops = self.shape.pass_flops(tokens, positions, labelled, torch.is_grad_enabled())
        self.flops += flops
        self.total += flops

    def take(self) -> int:
        flops, self.flops = self.flops, 0
        return flops


_ACTIVE: contextvars.ContextVar[WorkMeter | None] = contextvars.ContextVar(
    "tuneforge_work_meter", default=None
)


@contextlib.contextmanager
def metering(meter: WorkMeter | None) -> Iterator[None]:
    """Passes run through `tuneforge.train.trainer.labelled_outputs` inside this block add to `meter`."""
    token = _ACTIVE.set(meter)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def report_pass(inputs: dict[str, torch.Tensor], labelled: int) -> None:
    """A model pass over `inputs` with the head on `labelled` tokens ran; counted if a meter is active."""
    meter = _ACTIVE.get()
    if meter is not None:
        meter.add(inputs, labelled)


def measure_gemm_peak(
    device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]], seconds: float = 0.4
) -> float:
    """The best FLOP/s of `torch.matmul` over `shapes` ([m, k] x [k, n]) on `device`, each timed for up to
    `seconds` (or MAX_REPS matmuls) after a warm-up, on inputs from a generator of its own."""
    best = 0.0
    generator = torch.Generator(device=device).manual_seed(0)  # the training's random state stays untouched
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype, generator=generator)
        b = torch.randn(k, n, device=device, dtype=dtype, generator=generator)
        torch.matmul(a, b)  # warm-up: thread pools, kernel selection
        _synchronize(device)
        reps, start = 0, time.perf_counter()
        while (
            True
        ):  # `seconds` at most, and no more than MAX_REPS matmuls (small models' shapes take microseconds)
            torch.matmul(a, b)
            reps += 1
            _synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or reps >= MAX_REPS:
                break
        best = max(best, 2 * m * k * n * reps / elapsed)
    return best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_key(device: torch.device, dtype: torch.dtype, hidden: int, intermediate: int) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    return f"{name}|{dtype}|{hidden}x{intermediate}"


def _peaks() -> dict[str, float]:
    try:
        return dict(json.loads((tuneforge_home() / PEAKS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _save_peak(key: str, value: float) -> None:
    """Record `value` under `key` (never lowering what is there: a measurement slowed by other work is low)."""
    peaks = _peaks()
    if value <= peaks.get(key, 0.0):
        return
    peaks[key] = value
    path = tuneforge_home() / PEAKS_FILE
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(json.dumps(peaks, indent=1))
        staged.replace(path)


def gemm_peak(
    device: torch.device, dtype: torch.dtype, hidden: int, intermediate: int, fresh: bool = False
) -> float:
    """This machine's matmul peak (FLOP/s) at the model's projection shapes: measured once and cached (`fresh`:
    measured again, for a benchmark on an idle machine). The cache keeps the highest value seen, so a measurement taken while other work shared
    the machine is corrected by a later one, or by a training window that ran faster (`observed_rate`)."""
    key = _peak_key(device, dtype, hidden, intermediate)
    known = _peaks().get(key)
    if known is None or fresh:
        tokens = 2048
        shapes = [(tokens, hidden, hidden), (tokens, hidden, intermediate), (tokens, intermediate, hidden)]
        measured = measure_gemm_peak(device, dtype, shapes)
        _save_peak(key, measured)
        return max(measured, known or 0.0)
    return float(known)


def observed_rate(
    device: torch.device, dtype: torch.dtype, hidden: int, intermediate: int, rate: float
) -> float:
    """A training window reached `rate` FLOP/s: the peak is at least that. Returns the peak to use."""
    key = _peak_key(device, dtype, hidden, intermediate)
    peak = _peaks().get(key, 0.0)
    if rate > peak:
        _save_peak(key, rate)
        return rate
    return peak
