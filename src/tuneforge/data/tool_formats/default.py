"""LLaMA-Factory's `default` tool format: a ReAct-style tool list and `Action:` / `Action Input:` calls."""

from __future__ import annotations

import json
import re
from typing import Any

from tuneforge.data.tool_formats import Call, ToolFormat, dumps, register_tool_format, unwrap

PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n'
    "```\n"
)
CALL = re.compile(r"Action:\s*([a-zA-Z0-9_]+)\s*Action Input:\s*(.+?)(?=\s*Action:|\s*$)", re.DOTALL)


def _argument_line(name: str, param: dict[str, Any], required: list[str]) -> str:
    line = f"  - {name} ({param.get('type', '')}{', required' if name in required else ''}): "
    line += param.get("description", "")
    if param.get("enum"):
        line += ", should be one of [{}]".format(", ".join(param["enum"]))
    if param.get("items"):
        line += ", where each item should be {}".format(param["items"].get("type", ""))
    return line + "\n"


@register_tool_format("default")
class DefaultFormat(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        text, names = "", []
        for tool in map(unwrap, tools):
            parameters = tool.get("parameters", {})
            required = parameters.get("required", [])
            args = "".join(
                _argument_line(n, p, required) for n, p in parameters.get("properties", {}).items()
            )
            text += (
                f"> Tool Name: {tool['name']}\nTool Description: {tool.get('description', '')}\n"
                f"Tool Args:\n{args}\n"
            )
            names.append(tool["name"])
        return PROMPT.format(tool_text=text, tool_names=", ".join(names))

    def calls_text(self, calls: list[Call]) -> str:
        return "\n".join(f"Action: {name}\nAction Input: {dumps(arguments)}" for name, arguments in calls)

    def parse_calls(self, text: str) -> list[Call] | None:
        found = CALL.findall(text)
        if not found:
            return None
        calls = []
        for name, raw in found:
            try:
                calls.append((name.strip(), json.loads(raw.strip().strip('"').strip("`"))))
            except ValueError:
                return None
        return calls
