"""OpenAI function calling on top of a chat template: generated text -> `tool_calls` in OpenAI's shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tuneforge.data.template import ChatTemplate
from tuneforge.data.tool_formats import get_tool_format


def parse_tool_calls(template: ChatTemplate, text: str) -> list[dict[str, Any]] | None:
    """The calls in an answer, as OpenAI returns them, or None when the answer calls no tool. A named template
    reads them with its tool format; a tokenizer's own template that writes `<tool_call>` blocks (Qwen and
    most models trained like it) with the qwen format."""
    if isinstance(template, str):
        if "<tool_call>" not in template:
            return None
        fmt = get_tool_format("qwen")
    else:
        fmt = get_tool_format(template.tool_format)
    calls = fmt.parse_calls(text)
    if not calls:
        return None
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments
                if isinstance(arguments, str)
                else json.dumps(arguments, ensure_ascii=False),
            },
        }
        for name, arguments in calls
    ]


def assistant_message(template: ChatTemplate, text: str, tools_given: bool) -> tuple[dict[str, Any], bool]:
    """(the choice's message, whether it calls tools)."""
    calls = parse_tool_calls(template, text) if tools_given else None
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": calls}, True
    return {"role": "assistant", "content": text}, False
