"""Formats of the MiniMax and Seed-OSS families: minimax1 (JSON lines in `<tool_calls>`), minimax2
(`<invoke name=...>` blocks) and seed_oss (`<seed:tool_call>` blocks with `<function=...>`).

The texts reproduce LLaMA-Factory's byte for byte, slips included, since training text must match; each
slip is marked where it is written. The readers accept what our `calls_text` writes, even where
LLaMA-Factory's own extractor does not.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneforge.data.tool_formats import (
    Call,
    ToolFormat,
    dumps,
    json_calls,
    register_tool_format,
    tagged_calls,
    unwrap,
)

MINIMAX1_PROMPT = (
    "You are provided with these tools:\n<tools>\n{tool_text}</tools>\n\n"
    "If you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and provide tool-name "
    "and json-object of arguments, following the format below:\n<tool_calls>\n"
    '{{"name": <tool-name-1>, "arguments": <args-json-object-1>}}\n...\n</tool_calls>'
)
MINIMAX2_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more tools to assist with the user query.\n"
    "Here are the tools available in JSONSchema format:\n\n<tools>\n{tool_text}</tools>\n\n"
    "When making tool calls, use XML format to invoke tools and pass parameters:\n\n"
    '<minimax:tool_call>\n<invoke name="tool-name-1">\n<parameter name="param-key-1">param-value-1</parameter>\n'
    '<parameter name="param-key-2">param-value-2</parameter>\n...\n</invoke>\n</minimax:tool_call>'
)
# Upstream's wording, kept verbatim: it opens with a stray "system\n" and has no space before "Tool List:".
SEED_PROMPT = (
    "system\nYou are Doubao, a helpful AI assistant. You may call one or more functions to assist with the "
    "user query.Tool List:\nYou are authorized to use the following tools (described in JSON Schema format). "
    "Before performing any task, you must decide how to call them based on the descriptions and parameters of "
    "these tools.{tool_text}\n工具调用请遵循如下格式:\n<seed:tool_call>\n<function=example_function_name>\n"
    "<parameter=example_parameter_1>value_1</parameter>\n<parameter=example_parameter_2>This is the value for "
    "the second parameter\nthat can span\nmultiple lines</parameter>\n</function>\n</seed:tool_call>\n"
)

MINIMAX1_BLOCK = re.compile(r"<tool_calls>\s*(.+?)\s*</tool_calls>", re.DOTALL)
MINIMAX2_INVOKE = re.compile(r'<invoke name="(.*?)">(.*?)</invoke>', re.DOTALL)
MINIMAX2_PARAM = re.compile(r'<parameter name="(.*?)">(.*?)</parameter>', re.DOTALL)
# `>?`: our own calls_text writes `<function=name` with no `>` (see SeedOssFormat), the model's template
# writes `<function=name>`; the name stops before either, so it never swallows the `>`.
SEED_CALL = re.compile(
    r"<seed:tool_call>\s*<function=\s*([^\s<>]+)>?(.*?)</function>\s*</seed:tool_call>", re.DOTALL
)
SEED_PARAM = re.compile(r"<parameter=([^>]*)>(.*?)</parameter>", re.DOTALL)


def _value_of(raw: str) -> Any:
    """A parameter's text back to a value: JSON where it reads as JSON, else the text as written (so a
    string that looks like a number comes back as a number, as in LLaMA-Factory)."""
    try:
        return json.loads(raw.strip())
    except ValueError:
        return raw


def _tagged_arguments(pattern: re.Pattern[str], body: str) -> dict[str, Any]:
    return {key: _value_of(raw) for key, raw in pattern.findall(body)}


@register_tool_format("minimax1")
class MiniMax1Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return MINIMAX1_PROMPT.format(tool_text="".join(dumps(unwrap(tool)) + "\n" for tool in tools))

    def calls_text(self, calls: list[Call]) -> str:
        lines = (dumps({"name": name, "arguments": arguments}) for name, arguments in calls)
        return "<tool_calls>\n" + "\n".join(lines) + "\n</tool_calls>"

    def parse_calls(self, text: str) -> list[Call] | None:
        # one JSON object per line; unlike LLaMA-Factory (which skips lines that fail), a bad line makes the
        # whole block unreadable, so a half-read answer is never returned as calls
        block = MINIMAX1_BLOCK.search(text)
        if block is None:
            return None
        calls = []
        for line in filter(None, (line.strip() for line in block.group(1).split("\n"))):
            found = json_calls(line, "arguments")
            if found is None or len(found) != 1:
                return None
            calls += found
        return calls or None


@register_tool_format("minimax2")
class MiniMax2Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return MINIMAX2_PROMPT.format(
            tool_text="".join("<tool>" + dumps(unwrap(tool)) + "</tool>\n" for tool in tools)
        )

    def calls_text(self, calls: list[Call]) -> str:
        # Bare `<invoke>` blocks with no `<minimax:tool_call>` wrapper, as LLaMA-Factory writes them (its
        # minimax2 template's function slot adds no wrapper either).
        return tagged_calls(
            calls, '<invoke name="{name}">', '\n<parameter name="{key}">{value}</parameter>', "\n</invoke>"
        )

    def parse_calls(self, text: str) -> list[Call] | None:
        # LLaMA-Factory reads only inside `<minimax:tool_call>`, so it cannot read its own calls_text; we take
        # `<invoke>` blocks with or without the wrapper, because our server reads calls back with this.
        calls = [
            (name.strip(), _tagged_arguments(MINIMAX2_PARAM, body))
            for name, body in MINIMAX2_INVOKE.findall(text)
        ]
        return calls or None


@register_tool_format("seed_oss")
class SeedOssFormat(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        # the tool list as given, one JSON array, not unwrapped (upstream's choice)
        return SEED_PROMPT.format(tool_text="\n" + dumps(tools))

    def calls_text(self, calls: list[Call]) -> str:
        # Upstream slip kept for identical text: `<function=name` has no closing `>`. Every call also opens
        # with "\n", so parallel calls are separated by a blank line.
        return tagged_calls(
            calls,
            "\n<seed:tool_call>\n<function={name}",
            "\n<parameter={key}>{value}</parameter>",
            "\n</function>\n</seed:tool_call>",
        )

    def parse_calls(self, text: str) -> list[Call] | None:
        calls = [(name, _tagged_arguments(SEED_PARAM, body)) for name, body in SEED_CALL.findall(text)]
        return calls or None
