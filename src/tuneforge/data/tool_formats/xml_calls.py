"""Formats that wrap calls in XML-like tags: qwen (and ling, glm4_moe), qwen3_5."""

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
    wrap,
)

QWEN_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": '
    "<args-json-object>}}\n</tool_call>"
)
GLM4_MOE_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, output the function name and arguments within the following XML "
    "format:\n<tool_call>{{function-name}}\n<arg_key>{{arg-key-1}}</arg_key>\n<arg_value>{{arg-value-1}}"
    "</arg_value>\n<arg_key>{{arg-key-2}}</arg_key>\n<arg_value>{{arg-value-2}}</arg_value>\n...\n"
    "</tool_call>\n"
)
QWEN35_PROMPT = (
    "\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>{tool_text}\n</tools>\n\n"
    "If you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple "
    "lines\n</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow "
    "the specified format: an inner <function=...></function> block must be nested within "
    "<tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n- You may provide optional "
    "reasoning for your function call in natural language BEFORE the function call, but NOT after\n- If there "
    "is no function call available, answer the question like normal with your current knowledge and do not "
    "tell the user about function calls\n</IMPORTANT>"
)
QWEN_CALL = re.compile(r"<tool_call>(.+?)</tool_call>(?=\s*<tool_call>|\s*$)", re.DOTALL)
QWEN35_CALL = re.compile(
    r"<tool_call>\s*<function=\s*([^\s<>]+)\s*(.*?)\s*</function>\s*</tool_call>", re.DOTALL
)
QWEN35_PARAM = re.compile(r"<parameter=(.*?)>(.*?)</parameter>", re.DOTALL)
GLM4_MOE_NAME = re.compile(r"\s*([^\s<]+)")
GLM4_MOE_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


@register_tool_format("qwen")
class QwenFormat(ToolFormat):
    prompt = QWEN_PROMPT

    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return self.prompt.format(tool_text="".join("\n" + dumps(wrap(tool)) for tool in tools))

    def calls_text(self, calls: list[Call]) -> str:
        return "\n".join(
            "<tool_call>\n" + dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"
            for name, arguments in calls
        )

    def parse_calls(self, text: str) -> list[Call] | None:
        blocks = QWEN_CALL.findall(text)
        calls = [json_calls(block, "arguments") for block in blocks]
        if not blocks or any(c is None for c in calls):
            return None
        return [call for found in calls for call in found]


@register_tool_format("ling")
class LingFormat(QwenFormat):
    prompt = QWEN_PROMPT.removeprefix("\n\n")

    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return super().tools_text(tools) + "\ndetailed thinking off"


@register_tool_format("glm4_moe")
class GLM4MoeFormat(QwenFormat):
    prompt = GLM4_MOE_PROMPT

    def calls_text(self, calls: list[Call]) -> str:
        # no closing </tool_call>, as LLaMA-Factory writes it
        return tagged_calls(
            calls, "\n<tool_call>{name}", "\n<arg_key>{key}</arg_key>\n<arg_value>{value}</arg_value>", ""
        )

    def parse_calls(self, text: str) -> list[Call] | None:
        # Upstream keeps only Qwen's JSON reader, which cannot read the calls above (not JSON, no
        # `</tool_call>`); ours tries it first, then reads `<tool_call>name` + arg pairs, with or without the
        # closing tag, because the server reads calls back with this.
        json_found = super().parse_calls(text)
        if json_found is not None:
            return json_found
        calls = []
        for block in text.split("<tool_call>")[1:]:
            body = block.split("</tool_call>", 1)[0]
            name = GLM4_MOE_NAME.match(body)
            if name is None:
                return None
            arguments = {}
            for key, raw in GLM4_MOE_ARG.findall(body):
                try:
                    arguments[key.strip()] = json.loads(raw.strip())
                except ValueError:
                    arguments[key.strip()] = raw
            calls.append((name.group(1), arguments))
        return calls or None


@register_tool_format("qwen3_5")
class Qwen35Format(ToolFormat):
    def tools_text(self, tools: list[dict[str, Any]]) -> str:
        return QWEN35_PROMPT.format(
            tool_text="".join("\n" + dumps(tool.get("function", tool)) for tool in tools)
        )

    def calls_text(self, calls: list[Call]) -> str:
        return tagged_calls(
            calls,
            "<tool_call>\n<function={name}>",
            "\n<parameter={key}>\n{value}\n</parameter>",
            "\n</function>\n</tool_call>",
        )

    def parse_calls(self, text: str) -> list[Call] | None:
        calls = []
        for name, body in QWEN35_CALL.findall(text):
            arguments = {}
            for key, raw in QWEN35_PARAM.findall(body.strip()):
                try:
                    arguments[key] = json.loads(raw.strip())
                except ValueError:
                    arguments[key] = raw.strip()
            calls.append((name, arguments))
        return calls or None
