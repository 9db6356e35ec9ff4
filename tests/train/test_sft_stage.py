import json
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge.config import load_config
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage
from tuneforge.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def config(tiny_model_dir: Path, out: Path, **extra):
    return load_config(
        extra=tiny_run_keys(tiny_model_dir, out, **{"plot_loss": True, "max_steps": 6, **extra})
    )


def tiny_run_keys(tiny_model_dir: Path, out: Path, **extra) -> dict:
    """Flat keys of a seconds-long LoRA SFT run of a tiny model on the shipped identity data (lora_rank only
    when the method is LoRA: it belongs to finetuning_type lora)."""
    keys = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset": "identity",
        "dataset_dir": str(REPO / "data"),
        "cutoff_len": 128,
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 5e-3,
        "max_steps": 4,
        "logging_steps": 1,
        "lora_rank": 4,
        **extra,
    }
    if keys.get("finetuning_type", "lora") != "lora" and "lora_rank" not in extra:
        del keys["lora_rank"]
    return keys


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
    # run.yaml replays the exact run: gradient_checkpointing auto written as what it decided (the tiny run fits)
    decided = cfg.training.model_copy(update={"gradient_checkpointing": False})
    assert load_config(out / "run.yaml") == cfg.model_copy(update={"training": decided})
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
        raw = yaml.safe_load(path.read_text())
        assert cfg.data.dataset or {"task", "export_dir", "synth_mode"} & set(raw), (
            path
        )  # train, eval, export, synth
        assert set(raw) <= set(cfg.to_flat()), path


def test_val_size_holds_rows_out_and_reports_eval_loss(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, val_size=0.25, save_steps=3))
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in evals] == [3, 6]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] * 1.5


def test_gradient_checkpointing_trains_to_the_same_losses(tiny_model_dir, tmp_path):
    plain = tmp_path / "plain"
    checkpointed = tmp_path / "checkpointed"
    run_stage(config(tiny_model_dir, plain, max_steps=3))
    run_stage(config(tiny_model_dir, checkpointed, max_steps=3, gradient_checkpointing=True))
    a = [r["loss"] for r in read_metrics(plain / "metrics.jsonl")]
    b = [r["loss"] for r in read_metrics(checkpointed / "metrics.jsonl")]
    assert a[0] == pytest.approx(b[0], rel=1e-6)  # same forward
    assert a == pytest.approx(b, rel=1e-3)  # same updates, up to float reassociation


def test_bad_rows_stop_training_before_weights_load_unless_skipped(tiny_model_dir, tmp_path, monkeypatch):
    from tuneforge.data.loader import BadRowsError
    from tuneforge.train import runner as sft  # where stages load their weights

    corpus = Path(__file__).resolve().parents[1] / "data" / "corpus"
    loads = []
    real_load = sft.load_model
    monkeypatch.setattr(sft, "load_model", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    keys = {"dataset": "missing_field", "dataset_dir": str(corpus), "max_steps": 1}
    with pytest.raises(BadRowsError, match="missing_field.json:3"):
        run_stage(config(tiny_model_dir, tmp_path / "strict", **keys))
    assert loads == []
    run_stage(config(tiny_model_dir, tmp_path / "lenient", on_bad_rows="skip", **keys))
    assert loads == [1] and (tmp_path / "lenient" / "adapter_model.safetensors").is_file()


def test_neat_packing_run_trains_on_every_token(tiny_model_dir, tmp_path):
    out = tmp_path / "packed"
    run_stage(config(tiny_model_dir, out, neat_packing=True, cutoff_len=512, max_steps=2))
    records = read_metrics(out / "metrics.jsonl")
    assert records[-1]["loss"] > 0 and records[-1]["tokens_per_second"] > 0
    results = json.loads((out / "train_results.json").read_text())
    # the 24 identity rows (about 1,400 tokens) fit in 3 packed sequences, so 2 steps see all of them
    assert results["num_tokens_trained"] >= 1400


def test_streaming_trains_for_max_steps_and_needs_them(tiny_model_dir, tmp_path):
    from tuneforge.config import ConfigError

    with pytest.raises(ConfigError, match="set max_steps"):
        config(tiny_model_dir, tmp_path / "x", streaming=True, max_steps=-1)
    out = tmp_path / "stream"
    # 24 rows in batches of 8, two per step: steps straddle the end of each pass over the data
    run_stage(config(tiny_model_dir, out, streaming=True, max_steps=4, per_device_train_batch_size=8))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] < records[0]["loss"]


def test_streaming_packs_each_chunk_and_holds_out_the_first_rows(tiny_model_dir, tmp_path):
    from tuneforge.config import ConfigError
    from tuneforge.data.streaming import StreamingSFTDataset
    from tuneforge.model.loader import load_tokenizer

    with pytest.raises(ConfigError, match="whole number of rows"):
        config(tiny_model_dir, tmp_path / "x", streaming=True, max_steps=2, val_size=0.25)
    out = tmp_path / "stream"
    keys = {"streaming": True, "neat_packing": True, "cutoff_len": 160, "val_size": 4, "max_steps": 3}
    cfg = config(
        tiny_model_dir,
        out,
        save_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        **keys,
    )
    tokenizer = load_tokenizer(cfg.model)
    plain = list(
        StreamingSFTDataset(
            cfg.data.model_copy(update={"neat_packing": False, "val_size": 0}), tokenizer
        )._one_pass()
    )
    stream = StreamingSFTDataset(cfg.data, tokenizer)
    held, packed = stream.eval_rows(), list(stream._one_pass())
    assert sum(len(r["input_ids"]) for r in held) == sum(len(r["input_ids"]) for r in plain[:4])
    assert sum(len(r["input_ids"]) for r in packed) == sum(len(r["input_ids"]) for r in plain[4:])
    assert len(packed) < len(plain) - 4 and all(len(r["input_ids"]) <= 160 for r in packed)
    assert sum(r["position_ids"].count(0) for r in packed) == len(plain) - 4  # positions restart per row

    run_stage(cfg)
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    evals = read_metrics(out / "metrics.jsonl", kind="eval")
    assert [e["step"] for e in evals] == [3] and evals[0]["eval_loss"] > 0


def test_streaming_stops_at_a_bad_row_unless_skipping(tiny_model_dir, tmp_path):
    from tuneforge.data.conversation import DataError

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(12)]
    rows.insert(5, {"instruction": "no answer"})
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    keys = {"dataset": "d", "dataset_dir": str(tmp_path), "streaming": True, "max_steps": 2}
    with pytest.raises(
        DataError, match=r"d.json:1 \(item 6 on that line\): field 'output' is missing or null"
    ):
        run_stage(config(tiny_model_dir, tmp_path / "strict", **keys))
    run_stage(config(tiny_model_dir, tmp_path / "lenient", on_bad_rows="skip", **keys))
    assert (tmp_path / "lenient" / "adapter_model.safetensors").is_file()
    with pytest.raises(DataError, match="fewer than one optimizer step takes"):
        run_stage(
            config(
                tiny_model_dir, tmp_path / "tiny", on_bad_rows="skip", per_device_train_batch_size=16, **keys
            )
        )


def test_a_config_warning_is_given_once_per_run(tiny_model_dir, tmp_path, capsys):
    """LLaMA-Factory's files say bf16: true; on a CPU the run trains in float32 and says so once, not once for
    every time the config meets transformers' TrainingArguments."""
    if torch.cuda.is_available():
        pytest.skip("bf16 is kept on a GPU")
    run_stage(config(tiny_model_dir, tmp_path / "out", bf16=True, max_steps=1))
    assert capsys.readouterr().err.count("bf16 on a CPU is many times slower") == 1
