"""loss.png from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from tuneforge.train.callbacks import read_metrics


def plot_loss(output_dir: Path) -> Path | None:
    """Plot loss per optimizer step (raw and smoothed) to output_dir/loss.png; None when nothing was logged."""
    records = [r for r in read_metrics(output_dir / "metrics.jsonl") if r.get("loss") is not None]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    smooth, value = [], losses[0]
    for loss in losses:
        value = 0.8 * value + 0.2 * loss
        smooth.append(value)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(steps, losses, alpha=0.4, label="loss")
    ax.plot(steps, smooth, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss of {output_dir.name}")
    ax.legend()
    path = output_dir / "loss.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
