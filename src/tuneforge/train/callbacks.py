"""Trainer callbacks: one JSON object per logging step in metrics.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

# Trainer log keys that describe the whole run, not a step
SKIPPED = {"total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}


class MetricsJsonlCallback(TrainerCallback):
    """Appends `{step, epoch, loss, learning_rate, grad_norm, tokens_per_second}` per log to `path`.

    `tokens` returns the count of non-padding tokens trained on so far (read from the trainer).
    """

    def __init__(self, path: Path, tokens: Any):
        self.path = path
        self.tokens = tokens
        self._last_time = time.perf_counter()
        self._last_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last_time = time.perf_counter()
        self._last_tokens = self.tokens()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "eval_loss" in logs:  # an evaluation: its metrics, marked
            record = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4), "eval": True}
            record.update(
                {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, int | float)}
            )
            self._write(record)
            return
        if "loss" not in logs:
            return
        now, tokens = time.perf_counter(), self.tokens()
        elapsed = max(now - self._last_time, 1e-9)
        record = {
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0), 4),
            "loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_per_second": round((tokens - self._last_tokens) / elapsed, 2),
            "tokens_seen": tokens,
        }
        # a stage's own metrics (rewards/margins, accuracy, ...)
        record.update(
            {
                k: v
                for k, v in logs.items()
                if k not in record and k not in SKIPPED and isinstance(v, int | float)
            }
        )
        self._last_time, self._last_tokens = now, tokens
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def read_metrics(path: Path, skipped: bool = False, kind: str = "train") -> list[dict[str, Any]]:
    """The training records of metrics.jsonl (`kind="eval"`: evaluations); `skipped`: non-finite steps only."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a last line cut short by a kill
    wanted = [r for r in records if bool(r.get("skipped")) == skipped]
    return wanted if skipped else [r for r in wanted if bool(r.get("eval")) == (kind == "eval")]


class GracefulStop(TrainerCallback):
    """SIGTERM/SIGINT: finish the current step, write a checkpoint, stop. A second signal acts as usual.

    Use as a context manager around `trainer.train()`; `signum` tells afterwards what stopped the run.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        import signal
        import sys

        if self.signum is not None:  # asked twice: stop waiting for the checkpoint
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum
        # print, not logging: this runs in a signal handler, which must not wait on the logging lock
        print(
            f"tuneforge: received {signal.Signals(signum).name}; saving a checkpoint after this step, then exiting",
            file=sys.stderr,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
