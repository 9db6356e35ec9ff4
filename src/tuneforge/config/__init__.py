"""Typed configuration: one pydantic tree, flat YAML keys, all problems reported at once.

`FinetuningArguments` and `GROUPS` are composed on first use from the base keys and every plug-in's
keys (see `tuneforge.config.plugins`); the other groups are plain classes.
"""

from typing import Any

from tuneforge.config.loader import (
    ConfigError,
    build_config,
    dump_config,
    load_config,
    load_subset,
    read_yaml,
)
from tuneforge.config.schema import (
    DataArguments,
    GeneratingArguments,
    ModelArguments,
    RunConfig,
    TrainingArguments,
    groups,
)


def __getattr__(name: str) -> Any:
    if name == "GROUPS":
        return groups()
    if name == "FinetuningArguments":
        return groups()["finetuning"]
    raise AttributeError(f"module 'tuneforge.config' has no attribute '{name}'")


__all__ = [
    "GROUPS",
    "ConfigError",
    "DataArguments",
    "FinetuningArguments",
    "GeneratingArguments",
    "ModelArguments",
    "RunConfig",
    "TrainingArguments",
    "build_config",
    "dump_config",
    "load_config",
    "load_subset",
    "read_yaml",
    "groups",
]
