"""Human-readable reference of every config key, generated from the schema."""

from __future__ import annotations

import typing
from collections.abc import Iterable

from pydantic.fields import FieldInfo

from tuneforge.config.plugins import key_owners
from tuneforge.config.schema import groups, ordered_keys


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


def owner_label(key: str, group: str) -> str:
    """Which members a key belongs to, as users select them: "finetuning_type: lora or oft"; "" for base keys."""
    owners = key_owners(group).get(key)
    return "; ".join(f"{selector}: {' or '.join(names)}" for selector, names in owners) if owners else ""


def describe_keys(shown: Iterable[str] | None = None) -> str:
    """Every key of the chosen groups with its type, default and one-line doc; a group's plug-in keys are
    listed under the member that owns them."""
    lines: list[str] = []
    composed = groups()
    for name in shown or composed:
        cls = composed[name]
        lines.append(f"{name} keys ({(cls.__doc__ or '').strip()})")
        by_owner: dict[str, list[str]] = {}
        for key in ordered_keys(name):
            by_owner.setdefault(owner_label(key, name), []).append(key)
        for owner, keys in by_owner.items():
            if owner:
                lines.append(f"  with {owner}:")
            for key in keys:
                field = cls.model_fields[key]
                lines.append(f"  {key}  [{type_name(field.annotation)}, default {_default(field)}]")
                lines.append(f"      {field.description or ''}")
        lines.append("")
    return "\n".join(lines)


# The board's train form: the schema's groups under the names users think in.
FORM_SECTIONS = (
    ("model", "model", None),
    ("method", "finetuning", None),
    ("data", "data", None),
    ("training", "training", lambda key: not key.startswith(("output", "overwrite", "logging", "save"))),
    ("output", "training", lambda key: key.startswith(("output", "overwrite", "logging", "save"))),
)


def _kind(annotation: object) -> tuple[str, list[str]]:
    """(input kind, choices) for a field type: bool, int, float, choice, list or text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    literals = [a for a in args if typing.get_origin(a) is typing.Literal]
    if bool in args and len(literals) == 1 and len(args) == 2:  # gradient_checkpointing: auto | true | false
        return "choice", [str(a) for a in typing.get_args(literals[0])] + ["true", "false"]
    if (
        typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None))
        and args
    ):
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", [str(a) for a in typing.get_args(annotation)]
    if annotation is bool:
        return "bool", []
    if annotation is int:
        return "int", []
    if annotation is float:
        return "float", []
    if typing.get_origin(annotation) is list:
        return "list", []
    return "text", []


SYNTH_SECTIONS = (("synth", "synth", lambda key: key != "synth_api_key"),)  # keys come from the environment


def form_sections(spec: tuple = FORM_SECTIONS) -> list[dict[str, object]]:
    """Every config key of `spec`'s groups as a form field (key, kind, choices, default, doc), in its sections."""
    sections = []
    for title, group, keep in spec:
        fields = []
        fields_of = groups()[group].model_fields
        for key, field in ((k, fields_of[k]) for k in ordered_keys(group)):
            if keep is not None and not keep(key):
                continue
            kind, choices = _kind(field.annotation)
            default = field.get_default(call_default_factory=True)
            literal = [a for a in typing.get_args(field.annotation) if typing.get_origin(a) is typing.Literal]
            values = typing.get_args(literal[0] if literal else field.annotation)
            fields.append(
                {
                    "key": key,
                    "kind": kind,
                    "choices": choices,
                    "default": default,
                    "doc": field.description or "",
                    "owner": owner_label(key, group),
                    "optional": type(None) in typing.get_args(field.annotation),
                    # choices that are numbers (quantization_bit: 4 | 8) are sent as numbers
                    "numeric": kind == "choice" and all(isinstance(v, int) for v in values),
                }
            )
        sections.append({"title": title, "fields": fields})
    return sections
