"""The Hugging Face Trainer with a loss that computes logits only where there are labels.

A causal LM's output head is the single largest matmul and its logits the largest activation
(vocab x tokens). Prompt and padding positions never contribute to the SFT loss, so the head
runs on the hidden states of answer tokens only: same loss, less time and memory.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers.trainer_callback import ExportableState

from tuneforge.data.collator import merge_batches
from tuneforge.data.tokenized import IGNORE_INDEX
from tuneforge.model.vision import is_vision_language
from tuneforge.train import checkpoint
from tuneforge.train.flops import WorkMeter, gemm_peak, metering, model_shape, observed_rate, report_pass
from tuneforge.train.internals import GuardedTrainer
from tuneforge.train.linear_ce import fusable, linear_cross_entropy, linear_label_logps
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import warn

TUNEFORGE_STATE = "tuneforge_state.json"
SAMPLES_FILE = "samples.jsonl"  # a few sampled answers per logging step (grpo, ppo, online_dpo)
SAMPLES_PER_LOG = 4
MERGED_AWAY = "tuneforge_merged_away"  # marks a micro-batch whose rows were packed into the window's last one


class NonFiniteTrainingError(UserError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run stops, checkpoints stay as they are."""

    exit_code = 1


def split_decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder body, output head) of a causal LM, looking through PEFT wrappers; None if not separable."""
    inner = model
    if hasattr(inner, "peft_config"):
        if (
            getattr(inner, "active_peft_config", None) is not None
            and inner.active_peft_config.is_prompt_learning
        ):
            return None
        inner = inner.get_base_model()
    get_decoder = getattr(inner, "get_decoder", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder else None
    if is_vision_language(getattr(inner, "config", None)):  # merges image or audio features in
        decoder = getattr(inner, "model", None)
    if decoder is None or head is None or decoder is inner:
        return None
    return decoder, head


MODEL_INPUTS = (
    "input_ids", "attention_mask", "position_ids",
    # multimodal batches (tuneforge.data.visual): the processors' tensors and per-token types
    "pixel_values", "image_grid_thw", "image_sizes", "mm_token_type_ids", "token_type_ids",
    "pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "input_features", "feature_attention_mask",
)  # fmt: skip


@dataclass
class LabelledOutputs:
    """A causal LM's outputs at the positions that predict a label, only there.

    With a plain linear head and `chunked`, the `[n, vocab]` logits are never made whole: the loss and
    label log-probabilities come from `tuneforge.train.linear_ce`, chunk by chunk (same values)."""

    targets: torch.Tensor  # [n]: the label each position predicts
    keep: torch.Tensor  # [batch, seq - 1] bool: which positions those are
    states: torch.Tensor | None  # [n, hidden] last hidden states there; None when the model cannot be split
    head: torch.nn.Module | None = None  # the output head, with `states`
    full_logits: torch.Tensor | None = None  # [n, vocab] when the model could not be split
    chunked: bool = True

    @property
    def logits(self) -> torch.Tensor:
        """`[n, vocab]` logits, made whole (the chunked paths below avoid this)."""
        if self.full_logits is not None:
            return self.full_logits
        assert self.head is not None and self.states is not None
        return self.head(self.states)

    def _fused(self) -> bool:
        return self.chunked and self.full_logits is None and self.head is not None and fusable(self.head)

    def cross_entropy_sum(self) -> torch.Tensor:
        """Summed cross-entropy of the labels (float32 scalar)."""
        if self._fused():
            return linear_cross_entropy(self.states, self.head, self.targets)
        return F.cross_entropy(self.logits.float(), self.targets, reduction="sum")

    def label_logps(self) -> torch.Tensor:
        """Log-probability of each label `[n]` (float32)."""
        if self._fused():
            return linear_label_logps(self.states, self.head, self.targets)
        return self.logits.float().log_softmax(-1).gather(-1, self.targets[:, None]).squeeze(-1)


def labelled_outputs(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], chunked: bool = True
) -> LabelledOutputs:
    """Run the model on labelled positions only: the head (the largest matmul; its logits the largest
    activation) never sees prompt or padding positions, and with `chunked` it runs a chunk at a time."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    # Packed rows come without an attention mask: transformers then reads row boundaries from position_ids.
    forward = {k: inputs[k] for k in MODEL_INPUTS if inputs.get(k) is not None}
    # No KV cache while training: it only costs memory, and transformers ignores packing when one exists.
    forward["use_cache"] = False
    parts = split_decoder_and_head(model)
    report_pass(forward, int(keep.sum()))  # metrics.jsonl's mfu (tuneforge.train.flops)
    if parts is None:  # e.g. prompt-learning adapters: the full forward is needed
        logits = model(**forward).logits
        # prompt/p-tuning return logits for their virtual tokens too, in front of the real ones
        logits = logits[:, logits.shape[1] - labels.shape[1] :]
        return LabelledOutputs(targets[keep], keep, None, full_logits=logits[:, :-1][keep], chunked=chunked)
    decoder, head = parts
    states = decoder(**forward).last_hidden_state[:, :-1][keep]
    return LabelledOutputs(targets[keep], keep, states, head, chunked=chunked)


def answer_only_loss(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    num_items: torch.Tensor | int | None,
    chunked: bool = True,
) -> torch.Tensor:
    """Next-token cross-entropy over label positions; summed then divided by `num_items` (or the local count)."""
    out = labelled_outputs(model, inputs, chunked)
    loss = out.cross_entropy_sum()
    denominator = num_items if num_items is not None else out.keep.sum().clamp(min=1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(loss.device)
    return loss / denominator


class TuneforgeTrainer(GuardedTrainer):
    """The Hugging Face Trainer with tuneforge's loss, checkpoints and numerics guard.

    - `answer_only_loss`, and a count of non-padding tokens (for tokens/s).
    - Checkpoints are staged, hashed and renamed into place (`tuneforge.train.checkpoint`);
      rotation to `save_total_limit` never deletes the newest complete or the best checkpoint.
    - A step whose loss or gradient norm is not finite leaves the weights, optimizer and scheduler
      untouched, is recorded in metrics.jsonl with the ids of its rows, and `max_nonfinite_steps`
      such steps in a row stop the run with `NonFiniteTrainingError`.
    """

    def __init__(
        self,
        *args: Any,
        save_total_limit: int | None = None,
        max_nonfinite_steps: int = 3,
        metrics_path: Path | None = None,
        chunked_cross_entropy: bool = True,
        merge_micro_batches: bool = True,
        merge_budget: int = 0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.chunked = chunked_cross_entropy  # the head and its loss a chunk at a time (train/linear_ce.py)
        self.merge_micro_batches = merge_micro_batches
        self.merge_budget = merge_budget  # most tokens a packed window may hold: batch size x cutoff_len
        self.merged_windows = 0
        self.tokens_seen = 0
        self.nonfinite_steps = 0
        self.save_limit = save_total_limit
        self.max_nonfinite_steps = max_nonfinite_steps
        self.metrics_path = metrics_path
        self._consecutive_bad = 0
        self._step_problem: str | None = None
        self._step_samples: list[int] = []
        self._stats: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        real = inputs.pop("num_tokens", None)
        sample_ids = inputs.pop("sample_ids", None)
        if real is None and "attention_mask" in inputs:
            real = inputs["attention_mask"].sum()
        with metering(self._work_meter(model) if model.training else None):
            loss = self.training_loss(model, inputs, num_items_in_batch)
        if (
            self.divides_by_num_items
            and num_items_in_batch is not None
            and self.args.average_tokens_across_devices
        ):
            # num_items counts the answer tokens of the whole global batch, and DDP averages the gradients of
            # the processes: scale back up so N processes x batch b step as one process with batch N x b
            loss = loss * self.accelerator.num_processes
        if model.training:
            if real is not None:
                self.tokens_seen += int(real.sum())
            if sample_ids is not None:
                self._step_samples.extend(int(i) for i in sample_ids)
            if self._step_problem is None and not torch.isfinite(loss.detach()).item():
                self._step_problem = f"loss is {float(loss)}"
        # Only the loss exists: the head never ran on every position, so there are no full logits to return.
        return (loss, {"loss": loss}) if return_outputs else loss

    def _work_meter(self, model: torch.nn.Module) -> WorkMeter | None:
        """The meter of this run's model FLOPs (made on first use: the model is wrapped by then); None when
        the model has no separable decoder and head (prompt-learning methods)."""
        if not hasattr(self, "_meter"):
            inner = self.accelerator.unwrap_model(model)
            parts = split_decoder_and_head(inner)
            self._meter = None if parts is None else WorkMeter(model_shape(*parts, inner.config))
        return self._meter

    def _peak_flops(self, model: torch.nn.Module) -> float | None:
        """This machine's measured matmul peak in the training dtype (tuneforge.train.flops.gemm_peak)."""
        if not hasattr(self, "_peak"):
            text = (
                model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
            )
            hidden = getattr(text, "hidden_size", None)
            dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32
            self._peak = None
            if hidden:
                intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
                self._peak_shape = (self.args.device, dtype, hidden, intermediate)
                self._peak = gemm_peak(*self._peak_shape)
        return self._peak

    def train(self, *args: Any, **kwargs: Any) -> Any:
        # measured (or read from the cache) before the first window's clock starts
        self._peak_flops(self.model)
        self._mfu_since = time.perf_counter()
        return super().train(*args, **kwargs)

    # ---- the rows of an accumulation window as one packed sequence (merge_micro_batches) ----

    def _can_merge(self) -> bool:
        """SFT and pretraining only (their loss is a sum over tokens over the window's count), one forward of
        a decoder that packed rows can share (not prompt-learning methods), not under DeepSpeed or FSDP."""
        from accelerate.utils import DistributedType

        if not hasattr(self, "_mergeable"):
            inner = self.accelerator.unwrap_model(self.model)
            self._mergeable = (
                self.merge_micro_batches
                and self.merges_windows()
                and split_decoder_and_head(inner) is not None
                and self.accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)
            )
        return self._mergeable

    def merges_windows(self) -> bool:
        """Whether this stage's loss over a merged window equals that of its micro-batches (SFT and pretraining:
        a sum over tokens). A stage with its own `training_loss` overrides this and `merge_window` (DPO)."""
        return type(self).training_loss is TuneforgeTrainer.training_loss

    def merge_window(self, batches: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The window's rows as one packed micro-batch, or None when they cannot be merged."""
        return merge_batches(batches, self.merge_budget)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """The window's micro-batches; with `merge_micro_batches`, their rows packed into the last one (the
        others left empty), so the window runs one forward and backward on a longer sequence instead of several
        short ones, and no padding: the same loss and gradients (tests/train/test_merge_micro_batches.py), fuller
        matmuls (a window of one micro-batch of several rows loses its padding too). Only
        when the packed row holds no more tokens than one micro-batch may (batch size x cutoff), so the peak
        memory the estimate counts is not exceeded."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        several_rows = len(batches) > 1 or (len(batches) == 1 and len(batches[0].get("input_ids", ())) > 1)
        if several_rows and self._can_merge():
            merged = self.merge_window(batches)
            if merged is not None:
                self.merged_windows += 1
                empty = {"input_ids": torch.zeros((0, 0), dtype=torch.long), MERGED_AWAY: True}
                batches = [empty] * (len(batches) - 1) + [merged]
        return batches, num_items

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if inputs.get(MERGED_AWAY):  # its rows run with the window's last micro-batch
            return torch.zeros((), device=self.args.device)
        return super().training_step(model, inputs, *args, **kwargs)

    divides_by_num_items = (
        True  # training_loss sums over tokens and divides by num_items (else: a batch mean)
    )

    def training_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], num_items: torch.Tensor | int | None
    ) -> torch.Tensor:
        """The stage's loss; SFT and pretraining: next-token cross-entropy on answer tokens."""
        return answer_only_loss(model, inputs, num_items, self.chunked)

    # ---- stage metrics (rewards/margins, accuracy, ...) averaged over each logging window ----

    def record(self, model: torch.nn.Module, **values: torch.Tensor | float) -> None:
        """Remember metric values of this batch; `log` reports their means (eval ones prefixed eval_)."""
        bucket = self._stats["train" if model.training else "eval"]
        for name, value in values.items():
            bucket.setdefault(name, []).append(
                float(value.float().mean()) if torch.is_tensor(value) else float(value)
            )

    rollout_backend = "engine"  # online stages: how answers are sampled (rollout_backend)

    def generated(self, seconds: float, tokens: int) -> None:
        """Time spent sampling `tokens` answer tokens in this step (online stages): each logging step of
        metrics.jsonl gets rollout_tokens_per_second and rollout_share, the part of its wall time spent
        generating."""
        now = time.perf_counter()
        if getattr(self, "_window_start", None) is None:
            self._window_start = now - seconds
        spent = getattr(self, "_rollout", (0.0, 0))
        self._rollout = (spent[0] + seconds, spent[1] + tokens)

    def record_samples(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> None:
        """A few answers the policy sampled in this batch ({prompt, completion, reward, ...}): the last batch's
        of each logging window go to samples.jsonl beside metrics.jsonl (the board shows them)."""
        if model.training:
            self._samples = rows[:SAMPLES_PER_LOG]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for kind, prefix, marker in (("train", "", "loss"), ("eval", "eval_", "eval_loss")):
            if marker in logs and self._stats[kind]:
                logs.update({prefix + k: sum(v) / len(v) for k, v in self._stats[kind].items()})
                self._stats[kind] = {}
        if "loss" in logs:
            self._log_mfu(logs)
        seconds, tokens = getattr(self, "_rollout", (0.0, 0))
        if "loss" in logs and seconds > 0:
            now = time.perf_counter()
            logs["rollout_tokens_per_second"] = round(tokens / seconds, 2)
            logs["rollout_share"] = round(seconds / max(now - self._window_start, seconds), 4)
            self._rollout, self._window_start = (0.0, 0), now
        samples = getattr(self, "_samples", None)
        if "loss" in logs and samples and self.metrics_path is not None and self.args.should_save:
            line = {"step": self.state.global_step, "samples": samples}
            with (Path(self.metrics_path).parent / SAMPLES_FILE).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._samples = []
        super().log(logs, start_time)

    # ---- numerics guard ----

    def _log_mfu(self, logs: dict[str, float]) -> None:
        """`mfu`: the model FLOPs of the training passes since the last log over the window's wall time x the
        measured peak (tuneforge.train.flops); model_tflops too. The first window starts with `train`."""
        now, meter = time.perf_counter(), getattr(self, "_meter", None)
        start = getattr(self, "_mfu_since", now)
        self._mfu_since = now
        peak = getattr(self, "_peak", None)
        if meter is None or not peak:
            return
        flops = meter.take()
        if flops and now > start:
            rate = flops / (now - start)
            if rate > peak:  # the cached peak was measured while the machine was busy: it is at least this
                self._peak = peak = observed_rate(*self._peak_shape, rate)
            logs["mfu"] = round(rate / peak, 4)
            logs["model_tflops"] = round(rate / 1e12, 4)

    def after_grad_norm(self, grad_norm: Any) -> None:
        value = float(grad_norm) if grad_norm is not None else 0.0
        problem = self._step_problem or (None if math.isfinite(value) else f"gradient norm is {value}")
        samples, self._step_samples, self._step_problem = self._step_samples, [], None
        if problem is None:
            self._consecutive_bad = 0
        else:
            self._skip_update(problem, samples)

    def _skip_update(self, problem: str, samples: list[int]) -> None:
        """Make the coming optimizer and scheduler steps no-ops, record the step, stop if it keeps happening."""
        self.skip_next_update()
        step = self.state.global_step + 1
        self.nonfinite_steps += 1
        self._consecutive_bad += 1
        record = {
            "step": step,
            "skipped": True,
            "reason": problem,
            "sample_ids": sorted(set(samples)),
            "nonfinite_steps": self.nonfinite_steps,
        }
        warn(f"step {step} skipped: {problem} (rows {record['sample_ids']})")
        if self.metrics_path is not None and self.args.should_save:
            with self.metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        if self._consecutive_bad >= self.max_nonfinite_steps:
            newest, _ = checkpoint.newest_complete(Path(self.args.output_dir))
            kept = f"the last good checkpoint is {newest.path}" if newest else "no checkpoint was written yet"
            raise NonFiniteTrainingError(
                f"training stopped at step {step}: {self._consecutive_bad} steps in a row had a non-finite "
                f"loss or gradient (last: {problem}); {kept}. Lower learning_rate, check the rows listed "
                "in metrics.jsonl, or use bf16/fp32 instead of fp16 (max_nonfinite_steps sets the limit)"
            )

    # ---- checkpoints ----

    def write_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Write checkpoint-N into a staging folder (every process its part), manifest it, rename it into place
        and rotate (one process, after a barrier)."""
        run_dir = self.run_dir(trial)
        step = self.state.global_step
        final = run_dir / f"{checkpoint.PREFIX}{step}"
        staging = run_dir / f"{checkpoint.PARTIAL}{final.name}"
        if self.args.should_save:  # one process clears the staging folder, then every process writes into it
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        try:
            self._stage_checkpoint(trial, run_dir, step, staging, final)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # a half-written checkpoint is never left behind
            raise

    def _stage_checkpoint(self, trial: Any, run_dir: Path, step: int, staging: Path, final: Path) -> None:
        best = self.state.best_global_step
        if best and (best == step or (run_dir / f"{checkpoint.PREFIX}{best}").is_dir()):
            self.state.best_model_checkpoint = str(run_dir / f"{checkpoint.PREFIX}{best}")
        with checkpoint.torch_saves_without_crc32():  # the manifest hashes every byte
            self.save_model(str(staging), _internal_call=True)
            self.write_trainer_files(str(staging), trial)  # each process its own RNG state
        self.accelerator.wait_for_everyone()  # every file staged before the manifest and the rename
        if not self.args.should_save:
            return
        for cb in [
            c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)
        ]:
            name = cb.__class__.__name__
            if isinstance(self.state.stateful_callbacks.get(name), list):
                self.state.stateful_callbacks[name].append(cb.state())
            else:
                self.state.stateful_callbacks[name] = cb.state()
        self.state.save_to_json(str(staging / "trainer_state.json"))
        own = {"tokens_seen": self.tokens_seen, "nonfinite_steps": self.nonfinite_steps}
        (staging / TUNEFORGE_STATE).write_text(json.dumps(own), encoding="utf-8")
        checkpoint.publish(staging, final, step)
        keep = [self.state.best_model_checkpoint] if self.state.best_model_checkpoint else []
        checkpoint.rotate(run_dir, self.save_limit, keep)

    def save_weights(self, output_dir: str | None, state_dict: Any) -> None:
        super().save_weights(output_dir, state_dict)
        # training_args.bin is a pickle that only full unpickling could read; run.yaml records the run instead.
        Path(output_dir or self.args.output_dir, "training_args.bin").unlink(missing_ok=True)

    def restore_own_state(self, checkpoint_dir: Path) -> None:
        """Counters tuneforge keeps beside the Trainer's state (tokens seen, skipped steps)."""
        path = checkpoint_dir / TUNEFORGE_STATE
        if path.is_file():
            own = json.loads(path.read_text(encoding="utf-8"))
            self.tokens_seen = int(own.get("tokens_seen", 0))
            self.nonfinite_steps = int(own.get("nonfinite_steps", 0))
