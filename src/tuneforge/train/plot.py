"""Curves from metrics.jsonl: loss.png always, and one PNG per stage metric that was logged
(`rewards_margins.png`, `accuracy.png`, ...), each with its evaluation points when there are some."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.train.callbacks import read_metrics

# Stage metrics worth a curve of their own: reward models, DPO, KTO and GRPO.
STAGE_METRICS = (
    "accuracy",
    "margin",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "reward",
    "kl",
)


def plot_loss(output_dir: Path) -> Path | None:
    """Plot loss (raw and smoothed) and every logged stage metric per step; returns loss.png (None: nothing logged)."""
    records = [r for r in read_metrics(output_dir / "metrics.jsonl") if r.get("loss") is not None]
    if not records:
        return None
    evaluations = read_metrics(output_dir / "metrics.jsonl", kind="eval")
    path = _plot(output_dir, records, evaluations, "loss", "loss.png")
    for key in STAGE_METRICS:
        if any(key in r for r in records):
            _plot(output_dir, records, evaluations, key, key.replace("/", "_") + ".png")
    return path


def _plot(
    output_dir: Path, records: list[dict[str, Any]], evaluations: list[dict[str, Any]], key: str, name: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    steps, values = [s for s, _ in points], [v for _, v in points]
    smooth, value = [], values[0]
    for v in values:
        value = 0.8 * value + 0.2 * v
        smooth.append(value)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(steps, values, alpha=0.4, label=key)
    ax.plot(steps, smooth, label="smoothed")
    held_out = [(e["step"], e[f"eval_{key}"]) for e in evaluations if f"eval_{key}" in e]
    if held_out:
        ax.plot([s for s, _ in held_out], [v for _, v in held_out], "o-", label=f"eval_{key}")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{key} of {output_dir.name}")
    ax.legend()
    path = output_dir / name
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
