"""Trainer callbacks: one JSON object per logging step in metrics.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


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
        if not logs or "loss" not in logs or not state.is_world_process_zero:
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
        self._last_time, self._last_tokens = now, tokens
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
