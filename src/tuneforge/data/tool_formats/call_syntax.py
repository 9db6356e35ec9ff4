"""Formats that write calls as function-call expressions rather than JSON or tags: gemma4
(`call:name{key:value}` with `<|"|>`-quoted strings) and lfm2 (Python-style `name(key=value)`).

The texts are LLaMA-Factory's byte for byte, including what they lose (gemma4's tool list keeps only
descriptions and types; lfm2 writes strings unescaped); each loss is noted where it is written.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from typing import Any

from tuneforge.data.tool_formats import Call, ToolFormat, dumps, register_tool_format

GEMMA4_QUOTE = '<|"|>'
GEMMA4_CALL_OPEN = "<|tool_call>call:"
GEMMA4_CALL_CLOSE = "<tool_call|>"
LFM2_PROMPT = "List of tools: <|tool_list_start|>{tool_text}<|tool_list_end|>"
LFM2_CALLS_OPEN = "<|tool_call_start|>"
LFM2_CALLS_CLOSE = "<|tool_call_end|>"


def _inner(tool: dict[str, Any]) -> dict[str, Any]:
    # unlike `unwrap`, a `type: function` entry without a `function` key stays itself (upstream's rule here)
    return tool.get("function", tool) if tool.get("type") == "function" else tool


def _gemma_quoted(text: Any) -> str:
    return f"{GEMMA4_QUOTE}{text}{GEMMA4_QUOTE}"


def _gemma_value(value: Any) -> str:
    """Gemma 4's literal syntax: quoted strings, bare keys in sorted order, JSON-like keywords."""
    if isinstance(value, str):
        return _gemma_quoted(value)
    if isinstance(value, bool):  # before numbers: a bool is an int
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_gemma_value(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_gemma_value(item) for item in value) + "]"
    return str(value)


def _gemma_declaration(tool: dict[str, Any]) -> str:
    # Only what upstream writes: per property its description and upper-cased type (enum, items and
    # nested schemas are dropped), then required and the object type; a response schema keeps its
    # description and its type only when that is OBJECT. Falsy fields are left out, empty braces stay.
    text = f"declaration:{tool['name']}{{description:{_gemma_quoted(tool.get('description', ''))}"
    parameters = tool.get("parameters")
    if parameters:
        parts = []
        if parameters.get("properties"):
            properties = []
            for name, schema in parameters["properties"].items():
                fields = []
                if schema.get("description"):
                    fields.append(f"description:{_gemma_quoted(schema['description'])}")
                if schema.get("type"):
                    fields.append(f"type:{_gemma_quoted(str(schema['type']).upper())}")
                properties.append(f"{name}:{{{','.join(fields)}}}")
            parts.append(f"properties:{{{','.join(properties)}}}")
        if parameters.get("required"):
            parts.append(f"required:[{','.join(_gemma_quoted(item) for item in parameters['required'])}]")
        if parameters.get("type"):
            parts.append(f"type:{_gemma_quoted(str(parameters['type']).upper())}")
        text += f",parameters:{{{','.join(parts)}}}"
    response = tool.get("response")
    if response:
        parts = []
        if response.get("description"):
            parts.append(f"description:{_gemma_quoted(response['description'])}")
        if str(response.get("type", "")).upper() == "OBJECT":
            parts.append(f"type:{_gemma_quoted('OBJECT')}")
        text += f",response:{{{','.join(parts)}}}"
    return text + "}"


class _GemmaReader:
    """Reads Gemma 4's literal syntax back; ValueError on anything else. Strings run to the next quote
    mark (the syntax has no escapes), keys may be bare or quoted."""

    def __init__(self, text: str, pos: int = 0):
        self.text, self.pos = text, pos

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, token: str) -> None:
        self._skip()
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def _peek(self, token: str) -> bool:
        self._skip()
        return self.text.startswith(token, self.pos)

    def _string(self) -> str:
        self.expect(GEMMA4_QUOTE)
        end = self.text.find(GEMMA4_QUOTE, self.pos)
        if end < 0:
            raise ValueError("unterminated string")
        value, self.pos = self.text[self.pos : end], end + len(GEMMA4_QUOTE)
        return value

    def _items(self, close: str, item: Callable[[], Any]) -> None:
        if self._peek(close):
            self.pos += len(close)
            return
        while True:
            item()
            if self._peek(","):
                self.pos += 1
                continue
            self.expect(close)
            return

    def object(self) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}

        def entry() -> None:
            if self._peek(GEMMA4_QUOTE):
                key = self._string()
            else:
                end = self.text.find(":", self.pos)
                key = self.text[self.pos : end].strip() if end >= 0 else ""
                if not key or any(c in key for c in "{}[],<"):
                    raise ValueError(f"bad key at {self.pos}")
                self.pos = end
            self.expect(":")
            result[key] = self.value()

        self._items("}", entry)
        return result

    def value(self) -> Any:
        if self._peek(GEMMA4_QUOTE):
            return self._string()
        if self._peek("{"):
            return self.object()
        if self._peek("["):
            self.pos += 1
            items: list[Any] = []
            self._items("]", lambda: items.append(self.value()))
            return items
        start = self.pos
        while (
            self.pos < len(self.text)
            and self.text[self.pos] not in ",}]"
            and not self.text[self.pos].isspace()
        ):
            self.pos += 1
        word = self.text[start : self.pos]
        keywords = {"true": True, "false": False, "null": None}
        if word in keywords:
            return keywords[word]
        return json.loads(word)  # numbers; ValueError on anything else


@register_tool_format("gemma4")
class Gemma4Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return "\n".join(_gemma_declaration(_inner(tool)) for tool in tools)

    def calls_text(self, calls: list[Call]) -> str:
        # Top-level keys sorted and bare, calls run together with no separator. Arguments that are not an
        # object go between the braces as they are: a string verbatim (unquoted), anything else as a value.
        parts = []
        for name, arguments in calls:
            if isinstance(arguments, dict):
                inner = ",".join(f"{key}:{_gemma_value(arguments[key])}" for key in sorted(arguments))
            else:
                inner = arguments if isinstance(arguments, str) else _gemma_value(arguments)
            parts.append(f"{GEMMA4_CALL_OPEN}{name}{{{inner}}}{GEMMA4_CALL_CLOSE}")
        return "".join(parts)

    def parse_calls(self, text: str) -> list[Call] | None:
        # every call must read as `name{object}`; one that does not (e.g. non-object arguments) makes the
        # whole text unreadable rather than returning part of the answer as calls
        calls = []
        start = text.find(GEMMA4_CALL_OPEN)
        while start >= 0:
            name_start = start + len(GEMMA4_CALL_OPEN)
            brace = text.find("{", name_start)
            name = text[name_start:brace].strip() if brace >= 0 else ""
            if not name or any(c.isspace() for c in name):
                return None
            reader = _GemmaReader(text, brace)
            try:
                arguments = reader.object()
                reader.expect(GEMMA4_CALL_CLOSE)
            except ValueError:
                return None
            calls.append((name, arguments))
            start = text.find(GEMMA4_CALL_OPEN, reader.pos)
        return calls or None


def _python_value(node: ast.AST) -> Any:
    """A literal from the call expression; also takes JSON's true/false/null, at any depth."""
    if isinstance(node, ast.Name):
        names = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
        if node.id not in names:
            raise ValueError(f"not a literal: {node.id}")
        return names[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_python_value(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):  # `**spread`
            raise ValueError("not a literal")
        return {_python_value(k): _python_value(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


@register_tool_format("lfm2")
class LFM2Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return LFM2_PROMPT.format(tool_text=dumps([_inner(tool) for tool in tools]))

    def calls_text(self, calls: list[Call]) -> str:
        # Strings go between double quotes with no escaping (upstream's way), so a value holding `"`, `\` or
        # a newline gives text that no longer parses; other values are written as JSON.
        texts = []
        for name, arguments in calls:
            kwargs = (
                f'{key}="{value}"' if isinstance(value, str) else f"{key}={dumps(value)}"
                for key, value in arguments.items()
            )
            texts.append(f"{name}({', '.join(kwargs)})")
        return f"{LFM2_CALLS_OPEN}[{', '.join(texts)}]{LFM2_CALLS_CLOSE}"

    def parse_calls(self, text: str) -> list[Call] | None:
        start = text.find(LFM2_CALLS_OPEN)
        end = text.find(LFM2_CALLS_CLOSE, start) if start >= 0 else -1
        if end < 0:
            return None
        try:
            body = ast.parse(text[start + len(LFM2_CALLS_OPEN) : end].strip(), mode="eval").body
        except SyntaxError:
            return None
        nodes = body.elts if isinstance(body, ast.List) else [body]
        calls = []
        for node in nodes:
            # positional arguments have no name to go under, so (unlike upstream, which drops them) a call
            # with any is unreadable rather than read with arguments missing
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
                return None
            if any(keyword.arg is None for keyword in node.keywords):  # `**spread`
                return None
            try:
                arguments = {keyword.arg: _python_value(keyword.value) for keyword in node.keywords}
            except (ValueError, SyntaxError, TypeError):
                return None
            calls.append((node.func.id, arguments))
        return calls or None
