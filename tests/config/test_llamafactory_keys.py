"""Every key of LLaMA-Factory's argument classes is known, shared keys have its defaults, and the rest are
accepted, passed on or refused in one sentence as config/llamafactory_keys.yaml says."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from tuneforge.config import ConfigError, build_config, load_config
from tuneforge.config.llamafactory import llamafactory_keys
from tuneforge.config.loader import known_keys
from tuneforge.config.schema import GROUPS

HERE = Path(__file__).parent
README = HERE.parent.parent / "README.md"


def lf_arguments() -> dict[str, object]:
    """LLaMA-Factory's own keys with their defaults (recorded), then transformers' (installed) it inherits."""
    from transformers import Seq2SeqTrainingArguments

    keys: dict[str, object] = {}
    for field in dataclasses.fields(Seq2SeqTrainingArguments):
        if field.init:
            has = field.default is not dataclasses.MISSING
            keys[field.name] = field.default if has else None
    for line in (HERE / "llamafactory_arguments.tsv").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            _, key, default = line.split("\t")
            keys[key] = json.loads(default)
    return keys


def test_no_llamafactory_key_is_unknown():
    ours, foreign = set(known_keys()), llamafactory_keys()
    unknown = [key for key in lf_arguments() if key not in ours and key not in foreign]
    assert not unknown, f"add these to config/llamafactory_keys.yaml or the schema: {unknown}"


def test_catalog_lists_no_key_twice_and_none_the_schema_owns():
    foreign = llamafactory_keys()
    groups = [
        set(foreign.trainer),
        set(foreign.used),
        set(foreign.inert),
        set(foreign.needs),
        set(foreign.refused),
    ]
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b
        assert not a & set(known_keys())


def test_trainer_keys_are_trainingarguments_fields():
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert sorted(llamafactory_keys().trainer - names) == []


def readme_defaults_table() -> dict[str, str]:
    """`key -> tuneforge default` from the README's table of deliberate differences."""
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- defaults-table -->")[1]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, flags=re.M)
    assert rows, "the README's defaults table is missing"
    return dict(rows)


def normal(value: object) -> object:
    if isinstance(value, list) and len(value) == 1:
        return normal(value[0])
    return value


def test_shared_keys_have_llamafactory_defaults_except_the_readme_table():
    lf, documented = lf_arguments(), readme_defaults_table()
    differ = {}
    for group in GROUPS.values():
        for key, field in group.model_fields.items():
            if key not in lf:
                continue
            ours = field.get_default(call_default_factory=True)
            if normal(ours) != normal(lf[key]):
                differ[key] = ours
    assert set(differ) == set(documented), "README defaults table and schema disagree"
    for key, ours in differ.items():
        assert documented[key] == json.dumps(ours).strip('"'), key


def test_needs_keys_accept_their_default_and_refuse_a_feature_in_one_sentence():
    cfg = build_config(
        {"use_galore": False, "use_badam": False, "quantization_method": "bnb", "num_beams": 1}
    )
    assert cfg.llamafactory["use_badam"] is False
    with pytest.raises(ConfigError) as err:
        build_config({"num_beams": 4, "use_badam": True})
    first, second = err.value.problems
    assert "beam search" in first and "remove the key" in first
    assert "BAdam" in second


def test_inert_keys_are_accepted_with_any_value_and_kept_for_run_yaml():
    cfg = build_config({"ddp_timeout": 180000000, "run_name": "x", "image_max_pixels": 262144})
    flat = cfg.to_flat()
    assert flat["ddp_timeout"] == 180000000 and flat["image_max_pixels"] == 262144


def test_trainer_keys_reach_the_hf_arguments(tmp_path):
    from tuneforge.train.arguments import to_hf_arguments

    cfg = build_config(
        {
            "output_dir": str(tmp_path),
            "adam_beta2": 0.95,
            "run_name": "mine",
            "val_size": 0.1,
            "eval_strategy": "steps",
            "eval_steps": 7,
            "save_only_model": True,
        }
    )
    args = to_hf_arguments(cfg)
    assert args.adam_beta2 == 0.95 and args.run_name == "mine" and args.eval_steps == 7
    assert args.save_only_model  # checkpoints without optimizer state, as in LLaMA-Factory


def test_other_subsystems_files_are_refused_in_one_sentence(tmp_path):
    v1 = tmp_path / "v1.yaml"
    v1.write_text("model: Qwen/Qwen3-0.6B\nmodel_class: llm\ntrain_dataset: data/v1_sft_demo.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(v1)
    (problem,) = err.value.problems
    assert "v1 config" in problem
    megatron = tmp_path / "m.yaml"
    megatron.write_text("model_name_or_path: x\ntensor_model_parallel_size: 2\n")
    with pytest.raises(ConfigError, match="Megatron"):
        load_config(megatron)


def test_json_config_is_read(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"lora_rank": 16, "ddp_timeout": 9}))
    cfg = load_config(path)
    assert cfg.finetuning.lora_rank == 16 and cfg.llamafactory == {"ddp_timeout": 9}
    path.write_text('{"lora_rank": 16,}')
    with pytest.raises(ConfigError, match=r"cfg.json:1:\d+: not valid JSON"):
        load_config(path)


def test_flash_attn_values_as_llamafactory_writes_them():
    assert build_config({"flash_attn": "disabled"}).model.flash_attn == "disabled"
    assert build_config({"flash_attn": "flash_attention_2"}).model.flash_attn == "fa2"


def test_fa2_without_flash_attn_falls_back_to_sdpa_with_a_warning(capsys):
    from tuneforge.model.loader import attention_implementation

    assert attention_implementation("fa2") == "sdpa"  # no CUDA (or no flash-attn) here
    assert "using SDPA" in capsys.readouterr().err
    assert attention_implementation("disabled") == "eager"


def test_mixed_precision_the_device_lacks_falls_back_to_float32_with_a_warning(capsys):
    from tuneforge.train.arguments import mixed_precision

    assert mixed_precision(bf16=False, fp16=True) == {"bf16": False, "fp16": False}  # no CUDA here
    assert "fp16 mixed precision needs a CUDA device" in capsys.readouterr().err
    assert mixed_precision(bf16=True, fp16=False) == {"bf16": False, "fp16": False}
    assert "use_cpu: true keeps bf16" in capsys.readouterr().err
    assert mixed_precision(bf16=True, fp16=False, use_cpu=True) == {"bf16": True, "fp16": False}


def test_unknown_template_name_is_reported_with_the_other_keys():
    with pytest.raises(ConfigError) as err:
        build_config({"template": "qwen3_nothnk", "lora_rnak": 8})
    assert err.value.problems == [
        "unknown key 'lora_rnak': did you mean 'lora_rank'?",
        "template 'qwen3_nothnk' is unknown; did you mean 'qwen3_nothink'?",
    ]
    assert build_config({"template": "openchat-3.6"}).data.template == "openchat-3.6"


def test_trainer_refusals_are_sentences_before_data_loads(tmp_path):
    from tuneforge.train.stages import run_stage
    from tuneforge.utils.errors import UserError

    base = {"output_dir": str(tmp_path), "dataset": "not-even-read", "dataset_dir": str(tmp_path)}
    with pytest.raises(UserError, match="TrainingArguments refuse this config: .*bogus"):
        run_stage(build_config({**base, "optim": "bogus"}))
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(UserError, match="report_to: wandb needs the wandb package: pip install wandb"):
            run_stage(build_config({**base, "report_to": "wandb"}))
    with pytest.raises(ConfigError, match="max_steps"):
        build_config({"max_steps": 2**70})
