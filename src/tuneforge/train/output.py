"""The output directory: refuse to overwrite a finished run by accident; write run.yaml and loss.png."""

from __future__ import annotations

from pathlib import Path

from tuneforge.config import RunConfig, dump_config
from tuneforge.utils.errors import UserError


def prepare_output_dir(cfg: RunConfig) -> Path:
    out = Path(cfg.training.output_dir)
    t = cfg.training
    if out.is_dir() and any(out.iterdir()) and not (t.overwrite_output_dir or t.resume_from_checkpoint):
        raise UserError(
            f"output_dir {out} is not empty; choose another output_dir, set overwrite_output_dir: true, "
            "or set resume_from_checkpoint to continue a run"
        )
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    if metrics.exists() and not t.resume_from_checkpoint:
        metrics.unlink()
    dump_config(cfg, out / "run.yaml")
    return out


def save_run(cfg: RunConfig, out: Path) -> None:
    dump_config(cfg, out / "run.yaml")
    if cfg.finetuning.plot_loss:
        from tuneforge.train.plot import plot_loss

        plot_loss(out)
