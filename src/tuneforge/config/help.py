"""Human-readable reference of every config key, generated from the schema."""

from __future__ import annotations

import typing
from collections.abc import Iterable

from pydantic.fields import FieldInfo

from tuneforge.config.schema import GROUPS


def type_name(annotation: object) -> str:
    """A short type name for docs: `int`, `float | None`, `sft | dpo | ...`, `list[str]`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return "-" if value is None else str(value)


def describe_keys(groups: Iterable[str] | None = None) -> str:
    """Every key of the chosen groups with its type, default and one-line doc."""
    lines: list[str] = []
    for name in groups or GROUPS:
        cls = GROUPS[name]
        lines.append(f"{name} keys ({(cls.__doc__ or '').strip()})")
        for key, field in cls.model_fields.items():
            lines.append(f"  {key}  [{type_name(field.annotation)}, default {_default(field)}]")
            lines.append(f"      {field.description or ''}")
        lines.append("")
    return "\n".join(lines)
