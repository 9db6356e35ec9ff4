"""Formats whose calls are plain JSON: llama3 (`parameters`), mistral (`arguments`, always a list), glm4."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tuneforge.data.tool_formats import (
    Call,
    ToolFormat,
    dumps,
    json_calls,
    register_tool_format,
    unwrap,
    wrap,
)

LLAMA3_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON for a function "
    'call. Respond in the format {{"name": function name, "parameters": dictionary of argument name and its '
    "value}}. Do not use variables.\n\n{tool_text}"
)
GLM4_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{tool_text}"
)


@register_tool_format("llama3")
class Llama3Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        # LLaMA-Factory writes today's date, as Llama 3.1's own template does
        text = "".join(dumps(wrap(tool), indent=4) + "\n\n" for tool in tools)
        return LLAMA3_PROMPT.format(date=datetime.now().strftime("%d %b %Y"), tool_text=text)

    def calls_text(self, calls: list[Call]) -> str:
        objects = [{"name": name, "parameters": arguments} for name, arguments in calls]
        return dumps(objects[0] if len(objects) == 1 else objects)

    def parse_calls(self, text: str) -> list[Call] | None:
        return json_calls(text, "parameters")


@register_tool_format("mistral")
class MistralFormat(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return "[AVAILABLE_TOOLS] " + dumps([wrap(tool) for tool in tools]) + "[/AVAILABLE_TOOLS]"

    def calls_text(self, calls: list[Call]) -> str:
        return dumps([{"name": name, "arguments": arguments} for name, arguments in calls])

    def parse_calls(self, text: str) -> list[Call] | None:
        return json_calls(text, "arguments")


@register_tool_format("glm4")
class GLM4Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        text = "".join(
            f"\n\n## {unwrap(tool)['name']}\n\n{dumps(unwrap(tool), indent=4)}\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
            for tool in tools
        )
        return GLM4_PROMPT.format(tool_text=text)

    def calls_text(self, calls: list[Call]) -> str:
        if len(calls) > 1:
            raise ValueError("GLM-4's tool format has no parallel calls; give one call per turn")
        ((name, arguments),) = calls
        return f"{name}\n{dumps(arguments)}"

    def parse_calls(self, text: str) -> list[Call] | None:
        if "\n" not in text:
            return None
        name, rest = text.split("\n", 1)
        try:
            return [(name, json.loads(rest.strip()))]
        except ValueError:
            return None
