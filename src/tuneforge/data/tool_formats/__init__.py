"""Tool-calling formats: how a template writes tool definitions into the system prompt, how it writes an
assistant's calls, and how calls are read back from generated text.

One file per format family registers its members by name (LLaMA-Factory's `tool_format` names); the folder
is discovered, so a new format is a new file. The texts are LLaMA-Factory's, so a row with tools renders
the same tokens here and there.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from functools import cache
from typing import Any

Call = tuple[str, Any]
"""A tool call: the function's name and its arguments (usually a dict)."""

_REGISTRY: dict[str, type[ToolFormat]] = {}


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON as LLaMA-Factory writes it: non-ASCII kept, default separators."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def unwrap(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style `{"type": "function", "function": {...}}` to its inner definition."""
    return tool.get("function", "") if tool.get("type") == "function" else tool


def wrap(tool: dict[str, Any]) -> dict[str, Any]:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


class ToolFormat:
    """A format's three texts; subclasses override what differs."""

    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        raise NotImplementedError

    def calls_text(self, calls: list[Call]) -> str:
        raise NotImplementedError

    def parse_calls(self, text: str) -> list[Call] | None:
        """The calls in generated text, or None when it holds none this format can read."""
        return None


def register_tool_format(*names: str):
    def decorate(cls: type[ToolFormat]) -> type[ToolFormat]:
        for name in names:
            _REGISTRY[name] = cls
        return cls

    return decorate


@cache
def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def tool_format_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_tool_format(name: str) -> ToolFormat:
    """The format registered as `name`; ValueError naming the known ones otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"tool_format '{name}' is unknown; known formats: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def tagged_calls(calls: list[Call], opening: str, argument: str, closing: str) -> str:
    """Calls written as markup, one per line group: `opening` (with {name}), then `argument` (with {key} and
    {value}: a string as it is, anything else as JSON) per argument, then `closing`."""
    return "\n".join(
        opening.format(name=name)
        + "".join(
            argument.format(key=key, value=value if isinstance(value, str) else dumps(value))
            for key, value in arguments.items()
        )
        + closing
        for name, arguments in calls
    )


def json_calls(text: str, arguments_key: str) -> list[Call] | None:
    """Calls written as a JSON object or list of objects with `name` and `arguments_key`."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, dict) and "name" in i and arguments_key in i for i in items):
        return None
    return [(i["name"], i[arguments_key]) for i in items]
