"""Turn flat YAML files and `key=value` overrides into a validated `RunConfig`, reporting every problem at once."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuneforge.config.llamafactory import foreign_file_kind, judge_foreign_key, llamafactory_keys
from tuneforge.config.plugins import owner_problems
from tuneforge.config.schema import RunConfig
from tuneforge.config.schema import groups as composed_groups
from tuneforge.utils.errors import TuneforgeError


class ConfigError(TuneforgeError):
    """One or more problems in a config; `problems` lists each as a sentence for people."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the config{where}:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def known_keys() -> dict[str, str]:
    """Every flat key mapped to the group that owns it."""
    return {key: group for group, cls in composed_groups().items() for key in cls.model_fields}


def closest_key(key: str, keys: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
    return matches[0] if matches else None


def parse_overrides(items: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """`key=value` strings to a dict; values are read as YAML scalars (`1e-4`, `true`, `a,b`)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            problems.append(f"override '{item}' is not of the form key=value")
            continue
        try:
            values[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            values[key] = raw
    return values, problems


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one flat config file (YAML, or JSON when it ends in .json); problems raise `ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError([f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: nested deeper than a config can be (a flat mapping of keys)"]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML ({getattr(err, 'problem', err)})"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text (byte {err.start})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of key: value, got {type(data).__name__}"])
    return data


def build_config(
    flat: dict[str, Any], source: str | None = None, groups: Iterable[str] | None = None
) -> RunConfig:
    """Validate flat keys into a `RunConfig`. `groups` limits which keys are allowed (e.g. chat has no training)."""
    composed = composed_groups()
    allowed = set(groups) if groups is not None else set(composed)
    owners = {k: g for k, g in known_keys().items() if g in allowed}
    problems: list[str] = []
    kind = foreign_file_kind({str(k) for k in flat} - set(owners))
    if kind:
        raise ConfigError([kind], source)
    per_group: dict[str, dict[str, Any]] = {g: {} for g in composed}
    foreign: dict[str, Any] = {}
    for key, value in flat.items():
        key = str(key)
        if key in owners:
            per_group[owners[key]][key] = value
            continue
        if key in llamafactory_keys():
            refusal = judge_foreign_key(key, value)
            if refusal:
                problems.append(refusal)
            else:
                foreign[key] = value
            continue
        hint = closest_key(key, owners)
        elsewhere = known_keys().get(key)
        if elsewhere:
            problems.append(f"key '{key}' is not used by this command")
        elif hint:
            problems.append(f"unknown key '{key}': did you mean '{hint}'?")
        else:
            problems.append(f"unknown key '{key}'; `tuneforge train --help` lists every key")
    template = per_group["data"].get("template")
    if isinstance(template, str) and template and template not in template_names():
        hint = closest_key(template, template_names())
        problems.append(
            f"template '{template}' is unknown"
            + (
                f"; did you mean '{hint}'?"
                if hint
                else "; `tuneforge templates` lists LLaMA-Factory's 124 names"
            )
        )
    groups_built: dict[str, Any] = {}
    for name, cls in composed.items():
        try:
            groups_built[name] = cls(**per_group[name])
        except ValidationError as err:
            problems.extend(_describe(err))
            continue
        problems += owner_problems(groups_built[name], name)
    if problems:
        raise ConfigError(problems, source)
    cfg = RunConfig(**groups_built, llamafactory=foreign)
    problems = cross_group_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


TEMPLATE_CATALOG = Path(__file__).parent.parent / "data" / "templates" / "catalog.yaml"


@functools.cache
def template_names() -> tuple[str, ...]:
    """The names `template:` takes, read from the catalog file (data, not code: config stays below data)."""
    return tuple(yaml.safe_load(TEMPLATE_CATALOG.read_text(encoding="utf-8")))


def cross_group_problems(cfg: RunConfig) -> list[str]:
    """Rules that tie keys of different groups together."""
    problems = []
    data, training = cfg.data, cfg.training

    if data.streaming:
        if training.max_steps <= 0:
            problems.append("key 'streaming': a stream has no known length, so set max_steps (> 0)")
        if data.val_size and (data.val_size < 1 or data.val_size != int(data.val_size)):
            problems.append(
                "key 'val_size': a stream has no known length, so give a whole number of rows to hold out "
                "(the first N rows), not a fraction"
            )
        if data.mix_strategy != "concat":
            problems.append("key 'mix_strategy': streaming reads datasets one after another (concat) only")
        if cfg.finetuning.stage == "pt":
            problems.append("key 'streaming': stage pt reads its text up front for now; set streaming: false")
    finetuning, model = cfg.finetuning, cfg.model
    if model.quantization_bit and finetuning.finetuning_type in ("freeze", "full"):
        problems.append(
            f"key 'quantization_bit': quantized weights cannot be trained directly; "
            f"use finetuning_type: lora (QLoRA) instead of {finetuning.finetuning_type}"
        )
    if finetuning.stage == "ppo":
        if finetuning.finetuning_type != "lora":
            problems.append(
                "key 'finetuning_type': stage ppo shares one base model between policy, reference and reward "
                "through LoRA adapters, so it needs finetuning_type: lora"
            )
        if data.val_size:
            problems.append("key 'val_size': stage ppo has no evaluation yet; set val_size: 0")
        if not finetuning.reward_model and not finetuning.reward_funcs:
            problems.append(
                "key 'reward_model': stage ppo needs a reward_model (a stage rm output) or reward_funcs"
            )
    if data.eval_dataset and not training.do_predict:
        problems.append(
            "key 'eval_dataset': it names the rows do_predict generates answers for; to evaluate while training, "
            "hold out training rows with val_size"
        )
    if training.do_predict:
        if (
            training.do_train and "do_train" in training.model_fields_set
        ):  # LLaMA-Factory leaves it out (false)
            problems.append(
                "key 'do_predict': predict in a config of its own with do_train: false (and the trained "
                "adapter in adapter_name_or_path)"
            )
        if not training.predict_with_generate:
            problems.append(
                "key 'predict_with_generate': do_predict scores generated answers; set it to true"
            )
        if not data.eval_dataset:
            problems.append("key 'eval_dataset': do_predict needs the datasets to generate answers for")
    if training.early_stopping_steps and not data.val_size:
        problems.append("key 'early_stopping_steps': early stopping watches eval_loss, so set val_size (> 0)")
    return problems


def _describe(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"key '{key}': {msg}{shown}")
    return out


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    groups: Iterable[str] | None = None,
) -> RunConfig:
    """YAML file (optional), then `extra` keys, then `key=value` overrides; later ones win."""
    flat: dict[str, Any] = {}
    problems: list[str] = []
    if path is not None:
        flat.update(read_yaml(path))
    flat.update(extra or {})
    parsed, bad = parse_overrides(overrides)
    flat.update(parsed)
    problems += bad
    try:
        cfg = build_config(flat, source=str(path) if path else None, groups=groups)
    except ConfigError as err:
        raise ConfigError(problems + err.problems, err.source) from None
    if problems:
        raise ConfigError(problems, str(path) if path else None)
    return cfg


def load_subset(path: str | Path | None, overrides: Sequence[str], groups: Iterable[str]) -> RunConfig:
    """For commands that use some groups (chat: model, data, generating): a full training YAML is accepted
    and its other keys ignored, while overrides must belong to `groups`."""
    groups = tuple(groups)
    keys = {k for k, g in known_keys().items() if g in groups}
    keys |= {k for k in (read_yaml(path) if path else {}) if k in llamafactory_keys()}
    flat = {k: v for k, v in (read_yaml(path) if path else {}).items() if k in keys}
    return load_config(None, overrides, extra=flat, groups=groups)


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved flat config (every key) as YAML."""
    Path(path).write_text(
        yaml.safe_dump(cfg.to_flat(), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
