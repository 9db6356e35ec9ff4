from pathlib import Path

import pytest

from tuneforge.config import ConfigError, load_config
from tuneforge.config.help import describe_keys
from tuneforge.config.loader import known_keys


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_flat_yaml_lands_in_groups_and_overrides_win(tmp_path):
    path = write(
        tmp_path, "lora_rank: 16\nlearning_rate: 1.0e-4\ndataset: a, b\nlora_target: q_proj,v_proj\n"
    )
    cfg = load_config(path, ["learning_rate=3e-4", "bf16=true"])
    assert cfg.finetuning.lora_rank == 16
    assert cfg.training.learning_rate == pytest.approx(3e-4)
    assert cfg.training.bf16 is True
    assert cfg.data.dataset == ["a", "b"]
    assert cfg.finetuning.lora_target == ["q_proj", "v_proj"]
    assert cfg.finetuning.resolved_lora_alpha == 32


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "lora_rnak: 8\n"))
    assert err.value.problems == ["unknown key 'lora_rnak': did you mean 'lora_rank'?"]


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "lora_rank: eight\n"))
    (problem,) = err.value.problems
    assert "lora_rank" in problem and "'eight'" in problem


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "lora_rnak: 8\nlearning_rate: fast\ncutoff_len: -1\nstage: sfft\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["max_stpes=10", "oops"])
    text = str(err.value)
    assert len(err.value.problems) == 6, err.value.problems
    for needle in ("lora_rank", "learning_rate", "cutoff_len", "stage", "max_steps", "'oops'", str(path)):
        assert needle in text


def test_invalid_yaml_reports_file_line_and_column(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "lora_rank: 8\nbad: [unclosed\n"))
    assert f"{tmp_path / 'cfg.yaml'}:3:" in str(err.value) or f"{tmp_path / 'cfg.yaml'}:2:" in str(err.value)


def test_both_precisions_is_an_error():
    with pytest.raises(ConfigError, match="bf16 and fp16"):
        load_config(overrides=["bf16=true", "fp16=true"])


def test_help_lists_every_key_with_type_and_default():
    text = describe_keys()
    for key in known_keys():
        assert f"  {key}  [" in text
    assert "lora_rank  [int, default 8]" in text


def test_llamafactory_vocabulary_is_known():
    keys = set(known_keys())
    for key in [
        "model_name_or_path",
        "adapter_name_or_path",
        "template",
        "stage",
        "do_train",
        "finetuning_type",
        "lora_rank",
        "lora_alpha",
        "lora_dropout",
        "lora_target",
        "dataset",
        "dataset_dir",
        "cutoff_len",
        "max_samples",
        "val_size",
        "output_dir",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "lr_scheduler_type",
        "warmup_ratio",
        "logging_steps",
        "save_steps",
        "seed",
        "plot_loss",
        "bf16",
        "fp16",
        "gradient_checkpointing",
    ]:
        assert key in keys, key
