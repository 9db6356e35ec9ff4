"""Typed configuration: one pydantic tree, flat YAML keys, all problems reported at once."""

from tuneforge.config.loader import (
    ConfigError,
    build_config,
    dump_config,
    load_config,
    load_subset,
    read_yaml,
)
from tuneforge.config.schema import (
    GROUPS,
    DataArguments,
    FinetuningArguments,
    GeneratingArguments,
    ModelArguments,
    RunConfig,
    TrainingArguments,
)

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
]
