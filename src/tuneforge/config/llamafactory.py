"""LLaMA-Factory's keys that tuneforge's schema does not define: accepted, passed on, or refused in a sentence.

The facts live in `llamafactory_keys.yaml` beside this file (one line per key and why); this module only
reads them and judges one key's value. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_CATALOG = Path(__file__).with_name("llamafactory_keys.yaml")


@dataclass(frozen=True)
class ForeignKeys:
    trainer: frozenset[str]
    used: dict[str, str]
    inert: dict[str, str]
    needs: dict[str, dict[str, Any]]
    refused: dict[str, str]
    file_kinds: tuple[tuple[frozenset[str] | re.Pattern[str], str], ...]

    def __contains__(self, key: str) -> bool:
        return any(key in group for group in (self.trainer, self.used, self.inert, self.needs, self.refused))


@cache
def llamafactory_keys() -> ForeignKeys:
    raw = yaml.safe_load(_CATALOG.read_text(encoding="utf-8"))
    return ForeignKeys(
        trainer=frozenset(raw["trainer"]),
        used=dict(raw["used"]),
        inert=dict(raw["inert"]),
        needs=dict(raw["needs"]),
        refused=dict(raw["refused"]),
        file_kinds=tuple(
            (re.compile(kind["pattern"]) if "pattern" in kind else frozenset(kind["keys"]), kind["sentence"])
            for kind in raw["file_kinds"]
        ),
    )


def foreign_file_kind(keys: set[str]) -> str | None:
    """The sentence refusing a whole file of another LLaMA-Factory subsystem, when its keys give it away."""
    for signature, sentence in llamafactory_keys().file_kinds:
        if isinstance(signature, re.Pattern):
            if keys and all(signature.match(key) for key in keys):
                return sentence
        elif signature & keys:
            return sentence
    return None


def _same(value: Any, allowed: Any) -> bool:
    if isinstance(allowed, bool) or isinstance(value, bool):
        truthy = {"true": True, "false": False}
        if isinstance(value, str):
            value = truthy.get(value.strip().lower(), value)
        return value is allowed if isinstance(allowed, bool) else False
    if allowed is None:
        return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))
    if isinstance(allowed, (int, float)) and not isinstance(value, bool):
        try:
            return float(value) == float(allowed)
        except (TypeError, ValueError):
            return False
    if isinstance(allowed, str) and isinstance(value, str):
        return value.strip().lower() == allowed.lower()
    return value == allowed


def judge_foreign_key(key: str, value: Any) -> str | None:
    """None when a LLaMA-Factory key is accepted with this value, else the sentence that refuses it."""
    keys = llamafactory_keys()
    if key in keys.refused:
        return f"key '{key}': {keys.refused[key]}"
    rule = keys.needs.get(key)
    if rule is None or any(_same(value, ok) for ok in rule["ok"]):
        return None
    ok = rule["ok"][0]
    shown = "null" if ok is None else str(ok).lower() if isinstance(ok, bool) else str(ok)
    return (
        f"key '{key}': {value!r} asks for {rule['feature']}, which tuneforge does not have yet; "
        f"remove the key or set it to {shown}"
    )
