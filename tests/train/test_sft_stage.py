import json
from pathlib import Path

import pytest
import yaml

from tuneforge.config import load_config
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage
from tuneforge.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def config(tiny_model_dir: Path, out: Path, **extra):
    keys = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset": "identity",
        "dataset_dir": str(REPO / "data"),
        "cutoff_len": 128,
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 5e-3,
        "max_steps": 6,
        "logging_steps": 1,
        "lora_rank": 4,
        "plot_loss": True,
        **extra,
    }
    return load_config(extra=keys)


def test_sft_run_writes_adapter_config_metrics_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_model_dir, out)
    assert run_stage(cfg) == out
    for name in ("adapter_model.safetensors", "adapter_config.json", "run.yaml", "metrics.jsonl", "loss.png"):
        assert (out / name).is_file(), name
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert set(record) >= {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second"}
        assert record["tokens_per_second"] > 0 and record["loss"] > 0
    assert records[-1]["loss"] < records[0]["loss"]
    assert load_config(out / "run.yaml") == cfg  # run.yaml replays the exact run
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4


def test_refuses_to_overwrite_a_previous_run(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="overwrite_output_dir"):
        run_stage(config(tiny_model_dir, out))
    assert (out / "precious.txt").read_text() == "keep me"


def test_every_example_config_is_valid():
    for path in sorted((REPO / "examples").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.data.dataset, path
        raw = yaml.safe_load(path.read_text())
        assert set(raw) <= set(cfg.to_flat()), path
