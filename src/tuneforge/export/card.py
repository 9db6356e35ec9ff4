"""The files beside an export's weights: generation defaults, a model card, the run that trained it, and an
Ollama Modelfile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config import RunConfig

CARD_KEYS = (
    "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_target", "use_dora", "use_rslora", "pissa_init",
    "dataset", "template", "cutoff_len", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type", "quantization_bit",
)  # fmt: skip


def training_run(cfg: RunConfig) -> tuple[dict[str, Any], Path | None]:
    """The flat config of the run that produced the exported weights (the last adapter's run, or the full/freeze
    run whose folder is the base), and that folder; ({}, None) when it was not trained by tuneforge."""
    folders = [*(cfg.model.adapter_name_or_path or [])][-1:] or [cfg.model.model_name_or_path]
    folder = Path(folders[0])
    run = folder / "run.yaml"
    if run.is_file():
        try:
            return yaml.safe_load(run.read_text(encoding="utf-8")) or {}, folder
        except yaml.YAMLError:
            pass
    return {}, None


def final_loss(folder: Path | None) -> float | None:
    if folder is None or not (folder / "metrics.jsonl").is_file():
        return None
    losses = []
    for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("loss"), (int, float)):
            losses.append(float(record["loss"]))
    return losses[-1] if losses else None


def generation_config(cfg: RunConfig, tokenizer: Any, stop_ids: set[int]) -> dict[str, Any]:
    """generation_config.json: the run's sampling defaults; the template's stop tokens end generation too."""
    g = cfg.generating
    eos = [tokenizer.eos_token_id, *sorted(stop_ids - {tokenizer.eos_token_id})]
    config = {
        "do_sample": g.do_sample,
        "temperature": g.temperature,
        "top_p": g.top_p,
        "top_k": g.top_k,
        "max_new_tokens": g.max_new_tokens,
        "repetition_penalty": g.repetition_penalty,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
    }
    if tokenizer.pad_token_id is not None:
        config["pad_token_id"] = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config["bos_token_id"] = tokenizer.bos_token_id
    return config


def model_card(cfg: RunConfig, run: dict[str, Any], loss: float | None, files: list[str]) -> str:
    """README.md: what the model is, how it was trained, and how to use it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tuneforge_version = version("tuneforge")
    except PackageNotFoundError:
        tuneforge_version = "unknown"
    base = run.get("model_name_or_path") or cfg.model.model_name_or_path
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {base}",
        "tags: [tuneforge]",
        "---",
        "",
        f"# {Path(cfg.export.export_dir or 'export').name}",
        "",
        f"Exported by tuneforge {tuneforge_version} from `{base}`"
        + (
            f" with {len(cfg.model.adapter_name_or_path)} adapter(s) merged in."
            if cfg.model.adapter_name_or_path
            else "."
        ),
        "",
        "## Training",
        "",
    ]
    shown = {k: run[k] for k in CARD_KEYS if run.get(k) not in (None, [], "")}
    if shown:
        lines += ["| key | value |", "|---|---|"] + [f"| `{k}` | `{v}` |" for k, v in shown.items()]
    else:
        lines.append("Not trained by tuneforge (no run.yaml beside the weights).")
    if loss is not None:
        lines += ["", f"Final training loss: {loss:.4f}"]
    lines += ["", "## Files", "", *[f"- `{name}`" for name in files], ""]
    return "\n".join(lines)


def modelfile(
    source: str, template: str | None, cfg: RunConfig, stops: list[str], adapter: str | None = None
) -> str:
    """An Ollama Modelfile: FROM the weights (and the ADAPTER on them), the chat TEMPLATE, the default SYSTEM
    and the sampling defaults."""
    g = cfg.generating
    lines = [f"FROM {source}", *([f"ADAPTER {adapter}"] if adapter else [])]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    if g.default_system:
        lines.append(f'SYSTEM """{g.default_system}"""')
    for stop in stops:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    lines += [
        f"PARAMETER temperature {g.temperature}",
        f"PARAMETER top_p {g.top_p}",
        f"PARAMETER top_k {g.top_k}",
        f"PARAMETER repeat_penalty {g.repetition_penalty}",
    ]
    return "\n".join(lines) + "\n"
