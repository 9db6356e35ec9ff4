"""`tuneforge estimate`: the peak memory of a training run per device, before any weights load.

The model is built on the meta device from its config (no weights are read) with the configured method
applied, so parameter counts are exact; the rest is arithmetic, per device:

- weights: the frozen parameters as training holds them (float32: bf16/fp16 are autocast; 4/8-bit bases store
  their linear weights at 0.5/1 byte plus quantization constants);
- reference weights: the frozen reference policy of DPO, KTO, GRPO and online DPO when it is a second model
  (full and freeze tuning, or `ref_model`); LoRA-family runs switch their adapters off instead;
- trainable weights: the parameters the method trains, float32;
- gradients: one float32 per trainable parameter;
- optimizer states: AdamW keeps two float32 moments per trainable parameter (SGD one, Adafactor ~none);
- activations: of the rows one micro-batch holds (`batch_shape`: a chosen and a rejected row per example for
  DPO and reward models, num_generations rows of prompt and answer per prompt for GRPO), kept for every layer
  the backward pass runs through (all for LoRA and full; for freeze the trained layers and those above them):
  `ACTIVATION_BYTES` per token per hidden unit per layer (LoRA adds only rank floats per token: the fused
  layers keep `A x`; the projections' inputs are kept anyway); eager attention (`flash_attn: disabled`) also
  keeps each layer's seq x seq scores (SDPA and FlashAttention keep none); with gradient checkpointing only the
  layer inputs, plus one layer recomputed, plus (`gradient_checkpointing_policy: keep_attention`, fused
  attention) each layer's attention output and log-sum-exp;
- logits: the head runs on answer tokens only (at most the micro-batch's tokens): `LOGIT_COPIES` float32 copies
  (logits, log-softmax, gradient); with `chunked_cross_entropy` (the default) one chunk's logits and softmax;
- buffers: the runtime (CPU: Python, torch and the tokenized data; GPU: the CUDA context and allocator slack).

The constants were fitted to six measured CPU peaks of SmolLM2 (LoRA, freeze and full at two batch x cutoff
sizes, `bench/estimate_memory.py`, refitted 2026-12-02 after fused LoRA layers and chunked cross-entropy);
ACTIVATION_BYTES came out at 80, near what Korthikanti et al.'s 34 half-precision bytes per token, hidden unit
and layer give in float32 (68).

ZeRO (a `deepspeed` config) and FSDP divide optimizer states (stage 1), gradients (2) and weights (3) over the
processes; offload moves them to CPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.train.linear_ce import chunk_rows
from tuneforge.train.parallel import zero_settings
from tuneforge.train.recompute import effective_policy

GiB = 1024**3
ACTIVATION_BYTES = 80.0  # per token, per hidden unit, per layer the backward runs through (float32)
LOGIT_COPIES = 3.6  # float32 copies of the answer tokens' logits alive at the peak
CHUNK_COPIES = 2  # chunked head: one chunk's logits and their softmax
CHECKPOINTED_BYTES = 4  # per token, per hidden unit, per layer: only the layer input is kept
RUNTIME_CPU = int(0.414e9)  # Python, torch, transformers and the data at the peak (fitted, CPU)
RUNTIME_GPU = int(1.0 * GiB)  # CUDA context, kernels and allocator fragmentation
# gradient_checkpointing auto: on when the estimate without it passes this share of free memory
FIT_SHARE = 0.9
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 1, "adafactor": 0, "lion": 1}


@dataclass
class Estimate:
    """Bytes per device of each part, the processes they are spread over, and what was assumed."""

    parts: dict[str, int]
    processes: int
    device: str
    offloaded: dict[str, int] = field(default_factory=dict)  # bytes moved to CPU memory by ZeRO offload
    assumptions: list[str] = field(default_factory=list)
    checkpointing: bool = False  # whether gradient checkpointing is on (`auto` decided)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def as_dict(self, available: int | None = None) -> dict[str, Any]:
        """The estimate as JSON for the board: bytes per part, total, offloaded parts, and whether it fits."""
        return {
            "device": self.device,
            "processes": self.processes,
            "parts": dict(self.parts),
            "total": self.total,
            "offloaded": dict(self.offloaded),
            "available": available,
            "fits": None if available is None else self.total <= available,
            "assumptions": list(self.assumptions),
        }

    def table(self, available: int | None = None) -> str:
        lines = [
            f"peak memory per {self.device} ({self.processes} process{'es' if self.processes > 1 else ''})"
        ]
        for name, value in self.parts.items():
            lines.append(f"  {name:20s}{value / GiB:10.2f} GiB")
        lines.append(f"  {'total':20s}{self.total / GiB:10.2f} GiB")
        for name, value in self.offloaded.items():
            lines.append(f"  (offloaded to CPU: {name} {value / GiB:.2f} GiB)")
        if available is not None:
            verdict = "fits" if self.total <= available else "does NOT fit"
            lines.append(f"{verdict}: {available / GiB:.2f} GiB available per {self.device}")
        lines += [f"assumes: {a}" for a in self.assumptions]
        return "\n".join(lines)


def _meta_causal_lm(name_or_path: str, trust_remote_code: bool) -> Any:
    """The causal LM `name_or_path` names (a zoo name, folder, GGUF or hub id), on the meta device."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.model.sources import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _meta_model(cfg: RunConfig) -> Any:
    """The configured model with its method applied, on the meta device (no weights read)."""
    from accelerate import init_empty_weights

    from tuneforge.model.adapters import apply_adapter

    model = _meta_causal_lm(cfg.model.model_name_or_path, cfg.model.trust_remote_code)
    with init_empty_weights():
        finetuning = cfg.finetuning
        if getattr(finetuning, "pissa_init", False):  # same shapes as LoRA; its SVD needs real weights
            finetuning = finetuning.model_copy(update={"pissa_init": False})
        model = apply_adapter(model, finetuning, cfg.model.model_copy(update={"adapter_name_or_path": None}))
    return model


def batch_shape(cfg: RunConfig) -> tuple[int, int, str]:
    """(sequences one micro-batch's forward and backward hold, tokens per sequence at most, the sentence saying
    so). Preference stages hold each example's chosen and rejected rows; GRPO samples `num_generations` answers
    per prompt, online DPO two; the RL stages' rows are a prompt (cutoff_len) plus its sampled answer. KTO's
    KL rows run without gradients, so they keep nothing for the backward pass."""
    f, batch, cutoff = cfg.finetuning, cfg.training.per_device_train_batch_size, cfg.data.cutoff_len
    group = getattr(f, "num_generations", 1)
    rows, sampled, what = {
        "rm": (2, False, "a chosen and a rejected row per example"),
        "dpo": (2, False, "a chosen and a rejected row per example"),
        "grpo": (group, True, f"num_generations ({group}) rows of prompt and answer per prompt"),
        "online_dpo": (2, True, "two rows of prompt and sampled answer per prompt"),
        "ppo": (1, True, "one row of prompt and sampled answer per prompt"),
    }.get(f.stage, (1, False, "one row per example"))
    length = cutoff + (getattr(f, "max_completion_length", 0) or 0) if sampled else cutoff
    limit = "cutoff_len + max_completion_length" if sampled else "cutoff_len"
    return (
        batch * rows,
        length,
        f"{f.stage}: {what}, up to {limit} tokens each, {batch} per micro-batch ({batch * rows} x {length} tokens)",
    )


def _reference_weights(cfg: RunConfig, weights: int, trainable: int) -> tuple[int, str | None]:
    """(bytes of the frozen reference policy the stage loads beside the trained one, the sentence saying so).
    LoRA-family runs use the policy with its adapters off (no copy); full and freeze tuning load a copy, held
    whole by every process (the reference is not sharded by ZeRO)."""
    from tuneforge.model.adapters import is_peft
    from tuneforge.train.pref_losses import needs_reference

    f = cfg.finetuning
    uses = (
        (f.stage in ("dpo", "online_dpo") and needs_reference(f.pref_loss))
        or f.stage == "kto"
        or (f.stage == "grpo" and getattr(f, "grpo_beta", 0) > 0)
    )
    if not uses:
        return 0, None
    if f.ref_model is None and is_peft(f.finetuning_type):
        return 0, "the reference policy is the trained model with its adapters off: no second copy"
    if f.ref_model is None:
        return (
            weights + trainable * 4,
            "the reference policy: a frozen copy of the model, whole in every process",
        )
    ref = _meta_causal_lm(f.ref_model, cfg.model.trust_remote_code)
    return sum(p.numel() for p in ref.parameters()) * 4, f"the reference policy: ref_model {f.ref_model}"


def _backward_layers(params: list[tuple[str, Any]], layers: int) -> int:
    """The layers the backward pass runs through: from the lowest one with a trainable parameter to the top."""
    import re

    trained = set()
    for name, p in params:
        found = re.search(r"\.layers\.(\d+)\.", name)
        if p.requires_grad and found:
            trained.add(int(found.group(1)))
        elif p.requires_grad and "embed" in name:
            trained.add(0)
    return layers - min(trained) if trained else 0


def estimate(
    cfg: RunConfig,
    processes: int = 1,
    device: str = "cpu",
    deepspeed: str | None = None,
    available: int | None = None,
) -> Estimate:
    """The peak memory per device of training `cfg` on `processes` processes (with the ZeRO stage and offload
    of the DeepSpeed config `deepspeed`, a JSON file as LLaMA-Factory's `deepspeed:` key names).
    `gradient_checkpointing: auto` is decided against `available` bytes per device (default: free now)."""
    model = _meta_model(cfg)
    params = list(model.named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    frozen = [(n, p) for n, p in params if not p.requires_grad]
    assumptions = []
    bits = cfg.model.quantization_bit
    if bits in (4, 8):
        linear = sum(p.numel() for n, p in frozen if p.dim() == 2 and "embed" not in n and "lm_head" not in n)
        other = sum(p.numel() for n, p in frozen) - linear
        per = 0.5 + 4 / 64 if bits == 4 else 1 + 4 / 64  # packed values + one float32 scale per block of 64
        weights = int(linear * per + other * 4)
        assumptions.append(f"{bits}-bit linear layers of the base at {per:.3f} bytes per parameter")
    else:
        weights = sum(p.numel() for _, p in frozen) * 4
    t = cfg.training
    optim = str(cfg.llamafactory.get("optim", "adamw_torch")).lower()
    states = next((v for k, v in OPTIMIZER_STATES.items() if k in optim), 2)
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    vocab = model.config.vocab_size
    sequences, length, shape = batch_shape(cfg)
    assumptions.append(shape)
    tokens = sequences * length
    through = _backward_layers(params, layers)
    kernel = cfg.model.flash_attn
    heads = model.config.num_attention_heads
    head_dim = getattr(model.config, "head_dim", None) or hidden // heads
    # keep_attention: each checkpointed layer also keeps its fused attention output and log-sum-exp
    keeps_attention = effective_policy(cfg)[0] == "keep_attention" and kernel != "disabled"
    attention_kept = tokens * (heads * head_dim + heads) * 4 * through if keeps_attention else 0

    def activations_with(checkpointing: bool) -> int:
        per_token = (
            CHECKPOINTED_BYTES * through + ACTIVATION_BYTES if checkpointing else ACTIVATION_BYTES * through
        )
        kept = int(tokens * hidden * per_token) + (attention_kept if checkpointing else 0)
        # eager attention keeps its softmax scores (and their dropout copy) for backward
        if kernel == "disabled":
            scores = sequences * heads * length**2 * 8
            kept += int(scores * (1 if checkpointing else through))
        return kept

    checkpointing = t.gradient_checkpointing
    assumptions.append(f"the backward pass runs through {through} of {layers} layers")
    if kernel == "disabled":
        assumptions.append(
            "eager attention (flash_attn: disabled): the seq x seq scores of each layer are kept, growing with "
            "cutoff_len squared"
        )
    else:
        name = {"fa2": "FlashAttention-2", "fa3": "FlashAttention-3"}.get(
            kernel, "SDPA (fused on CPU and GPU)"
        )
        assumptions.append(f"attention through {name}: no seq x seq matrix kept")
    if t.chunked_cross_entropy:
        rows = min(tokens, chunk_rows(vocab))
        logits = int(rows * vocab * 4 * CHUNK_COPIES)
        assumptions.append(
            f"the head and its loss run {rows} answer tokens at a time (chunked_cross_entropy)"
        )
    else:
        logits = int(tokens * vocab * 4 * LOGIT_COPIES)
        assumptions.append(
            "logits for every token of the batch (the head runs on answer tokens only: an upper bound)"
        )
    reference, why = _reference_weights(cfg, weights, trainable)
    if why:
        assumptions.append(why)
    parts = {
        "weights": weights,
        "trainable weights": trainable * 4,
        "gradients": trainable * 4,
        "optimizer states": trainable * 4 * states,
        "activations": activations_with(checkpointing is True),
        "logits": logits,
        "buffers": RUNTIME_GPU if device != "cpu" else RUNTIME_CPU,
    }
    if reference:
        parts = {"weights": weights, "reference weights": reference, **parts}
    offloaded = _shard(parts, cfg, processes, deepspeed, assumptions)
    if checkpointing == "auto":  # on only when the run would not fit without it
        room = available if available is not None else available_memory(device, processes)
        checkpointing = room is not None and sum(parts.values()) > FIT_SHARE * room
        if checkpointing:
            saved = parts["activations"] - activations_with(True)
            parts["activations"] -= saved
            assumptions.append(
                f"gradient checkpointing: auto turned it on, the run needs {(sum(parts.values()) + saved) / GiB:.2f} "
                f"GiB without it and {room / GiB:.2f} GiB are free"
            )
        else:
            assumptions.append("gradient checkpointing: auto leaves it off, the run fits without it")
    elif checkpointing:
        assumptions.append("gradient checkpointing: layer inputs kept, one layer recomputed at a time")
    if checkpointing and keeps_attention:  # before the checkpointing decision, which stays last
        assumptions.insert(
            len(assumptions) - 1,
            f"gradient_checkpointing_policy keep_attention: {attention_kept / GiB:.2f} GiB of attention outputs "
            "kept, attention not recomputed",
        )
    return Estimate(parts, processes, device, offloaded, assumptions, checkpointing=bool(checkpointing))


def _shard(
    parts: dict[str, int], cfg: RunConfig, processes: int, deepspeed: str | None, assumptions: list[str]
) -> dict[str, int]:
    """Divide `parts` over the processes as the ZeRO stage does and move offloaded parts out (in place); returns
    the bytes offloaded to CPU memory."""
    stage, offload_optimizer, offload_params = zero_settings(cfg, deepspeed)
    offloaded: dict[str, int] = {}
    if stage and processes > 1:
        for part, from_stage in (
            ("optimizer states", 1),
            ("gradients", 2),
            ("weights", 3),
            ("trainable weights", 3),
        ):
            if stage >= from_stage:
                parts[part] //= processes
        assumptions.append(f"ZeRO stage {stage} over {processes} processes")
    if offload_optimizer:
        offloaded["optimizer states"] = parts["optimizer states"]
        parts["optimizer states"] = 0
    if offload_params:
        offloaded["weights"] = parts["weights"]
        parts["weights"] = 0
    return offloaded


def available_memory(device: str, processes: int = 1) -> int | None:
    """Free memory per device: the GPU's free memory, or the machine's available RAM (shared by the processes
    of this machine on CPU)."""
    if device == "cpu":
        import os

        import psutil

        here = min(processes, int(os.environ.get("LOCAL_WORLD_SIZE") or processes))
        return int(psutil.virtual_memory().available) // max(here, 1)
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(free)
