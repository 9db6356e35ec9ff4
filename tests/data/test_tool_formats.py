"""Every tool format against LLaMA-Factory's own output (facts Appendix A: its tool_utils run on the tools and
calls below), and reading each format's calls back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import pytest

from tuneforge.data.tool_formats import get_tool_format, tool_format_names

TOOLS = [
    {
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "array", "items": {"type": "integer"}},
            },
            "required": ["city"],
        },
    }
]
CALL_A = ("get_weather", {"city": "北京", "days": [1, 2]})
CALL_B = ("get_time", {"tz": "UTC"})


class Expected(NamedTuple):
    tools: str
    call_a: str
    calls_ab: str | None  # None: the format has no parallel calls


# llama3's tool prompt holds today's date, written where `{date}` stands.
EXPECTED = {
    "default": Expected(
        tools=(
            "You have access to the following tools:\n"
            "> Tool Name: get_weather\n"
            "Tool Description: Get weather\n"
            "Tool Args:\n"
            "  - city (string, required): City name\n"
            "  - unit (string): , should be one of [c, f]\n"
            "  - days (array): , where each item should be integer\n"
            "\n"
            "Use the following format if using a tool:\n"
            "```\n"
            "Action: tool name (one of [get_weather])\n"
            "Action Input: the input to the tool, in a JSON format representing the kwargs (e.g. "
            '```{"input": "hello world", "num_beams": 5}```)\n'
            "```\n"
        ),
        call_a=('Action: get_weather\nAction Input: {"city": "北京", "days": [1, 2]}'),
        calls_ab=(
            "Action: get_weather\n"
            'Action Input: {"city": "北京", "days": [1, 2]}\n'
            "Action: get_time\n"
            'Action Input: {"tz": "UTC"}'
        ),
    ),
    "gemma4": Expected(
        tools=(
            'declaration:get_weather{description:<|"|>Get '
            'weather<|"|>,parameters:{properties:{city:{description:<|"|>City '
            'name<|"|>,type:<|"|>STRING<|"|>},unit:{type:<|"|>STRING<|"|>},days:{type:<|"|>ARRAY<|"|>}}'
            ',required:[<|"|>city<|"|>],type:<|"|>OBJECT<|"|>}}'
        ),
        call_a='<|tool_call>call:get_weather{city:<|"|>北京<|"|>,days:[1,2]}<tool_call|>',
        calls_ab=(
            '<|tool_call>call:get_weather{city:<|"|>北京<|"|>,days:[1,2]}<tool_call|><|tool_call>call:get'
            '_time{tz:<|"|>UTC<|"|>}<tool_call|>'
        ),
    ),
    "glm4": Expected(
        tools=(
            "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n"
            "\n"
            "# 可用工具\n"
            "\n"
            "## get_weather\n"
            "\n"
            "{\n"
            '    "name": "get_weather",\n'
            '    "description": "Get weather",\n'
            '    "parameters": {\n'
            '        "type": "object",\n'
            '        "properties": {\n'
            '            "city": {\n'
            '                "type": "string",\n'
            '                "description": "City name"\n'
            "            },\n"
            '            "unit": {\n'
            '                "type": "string",\n'
            '                "enum": [\n'
            '                    "c",\n'
            '                    "f"\n'
            "                ]\n"
            "            },\n"
            '            "days": {\n'
            '                "type": "array",\n'
            '                "items": {\n'
            '                    "type": "integer"\n'
            "                }\n"
            "            }\n"
            "        },\n"
            '        "required": [\n'
            '            "city"\n'
            "        ]\n"
            "    }\n"
            "}\n"
            "在调用上述函数时，请使用 Json 格式表示调用的参数。"
        ),
        call_a=('get_weather\n{"city": "北京", "days": [1, 2]}'),
        calls_ab=None,
    ),
    "glm4_moe": Expected(
        tools=(
            "\n"
            "\n"
            "# Tools\n"
            "\n"
            "You may call one or more functions to assist with the user query.\n"
            "\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            "<tools>\n"
            '{"type": "function", "function": {"name": "get_weather", "description": "Get weather", '
            '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": '
            '"City name"}, "unit": {"type": "string", "enum": ["c", "f"]}, "days": {"type": "array", '
            '"items": {"type": "integer"}}}, "required": ["city"]}}}\n'
            "</tools>\n"
            "\n"
            "For each function call, output the function name and arguments within the following XML "
            "format:\n"
            "<tool_call>{function-name}\n"
            "<arg_key>{arg-key-1}</arg_key>\n"
            "<arg_value>{arg-value-1}</arg_value>\n"
            "<arg_key>{arg-key-2}</arg_key>\n"
            "<arg_value>{arg-value-2}</arg_value>\n"
            "...\n"
            "</tool_call>\n"
        ),
        call_a=(
            "\n"
            "<tool_call>get_weather\n"
            "<arg_key>city</arg_key>\n"
            "<arg_value>北京</arg_value>\n"
            "<arg_key>days</arg_key>\n"
            "<arg_value>[1, 2]</arg_value>"
        ),
        calls_ab=(
            "\n"
            "<tool_call>get_weather\n"
            "<arg_key>city</arg_key>\n"
            "<arg_value>北京</arg_value>\n"
            "<arg_key>days</arg_key>\n"
            "<arg_value>[1, 2]</arg_value>\n"
            "\n"
            "<tool_call>get_time\n"
            "<arg_key>tz</arg_key>\n"
            "<arg_value>UTC</arg_value>"
        ),
    ),
    "lfm2": Expected(
        tools=(
            'List of tools: <|tool_list_start|>[{"name": "get_weather", "description": "Get weather", '
            '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": '
            '"City name"}, "unit": {"type": "string", "enum": ["c", "f"]}, "days": {"type": "array", '
            '"items": {"type": "integer"}}}, "required": ["city"]}}]<|tool_list_end|>'
        ),
        call_a='<|tool_call_start|>[get_weather(city="北京", days=[1, 2])]<|tool_call_end|>',
        calls_ab=(
            '<|tool_call_start|>[get_weather(city="北京", days=[1, 2]), get_time(tz="UTC")]<|tool_call_end|>'
        ),
    ),
    "ling": Expected(
        tools=(
            "# Tools\n"
            "\n"
            "You may call one or more functions to assist with the user query.\n"
            "\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            "<tools>\n"
            '{"type": "function", "function": {"name": "get_weather", "description": "Get weather", '
            '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": '
            '"City name"}, "unit": {"type": "string", "enum": ["c", "f"]}, "days": {"type": "array", '
            '"items": {"type": "integer"}}}, "required": ["city"]}}}\n'
            "</tools>\n"
            "\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n"
            "<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n'
            "</tool_call>\n"
            "detailed thinking off"
        ),
        call_a=(
            "<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}\n'
            "</tool_call>"
        ),
        calls_ab=(
            "<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}\n'
            "</tool_call>\n"
            "<tool_call>\n"
            '{"name": "get_time", "arguments": {"tz": "UTC"}}\n'
            "</tool_call>"
        ),
    ),
    "llama3": Expected(
        tools=(
            "Cutting Knowledge Date: December 2023\n"
            "Today Date: {date}\n"
            "\n"
            "You have access to the following functions. To call a function, please respond with JSON "
            'for a function call. Respond in the format {"name": function name, "parameters": '
            "dictionary of argument name and its value}. Do not use variables.\n"
            "\n"
            "{\n"
            '    "type": "function",\n'
            '    "function": {\n'
            '        "name": "get_weather",\n'
            '        "description": "Get weather",\n'
            '        "parameters": {\n'
            '            "type": "object",\n'
            '            "properties": {\n'
            '                "city": {\n'
            '                    "type": "string",\n'
            '                    "description": "City name"\n'
            "                },\n"
            '                "unit": {\n'
            '                    "type": "string",\n'
            '                    "enum": [\n'
            '                        "c",\n'
            '                        "f"\n'
            "                    ]\n"
            "                },\n"
            '                "days": {\n'
            '                    "type": "array",\n'
            '                    "items": {\n'
            '                        "type": "integer"\n'
            "                    }\n"
            "                }\n"
            "            },\n"
            '            "required": [\n'
            '                "city"\n'
            "            ]\n"
            "        }\n"
            "    }\n"
            "}\n"
            "\n"
        ),
        call_a='{"name": "get_weather", "parameters": {"city": "北京", "days": [1, 2]}}',
        calls_ab=(
            '[{"name": "get_weather", "parameters": {"city": "北京", "days": [1, 2]}}, {"name": '
            '"get_time", "parameters": {"tz": "UTC"}}]'
        ),
    ),
    "minimax1": Expected(
        tools=(
            "You are provided with these tools:\n"
            "<tools>\n"
            '{"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", '
            '"properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": '
            '"string", "enum": ["c", "f"]}, "days": {"type": "array", "items": {"type": "integer"}}}, '
            '"required": ["city"]}}\n'
            "</tools>\n"
            "\n"
            "If you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and "
            "provide tool-name and json-object of arguments, following the format below:\n"
            "<tool_calls>\n"
            '{"name": <tool-name-1>, "arguments": <args-json-object-1>}\n'
            "...\n"
            "</tool_calls>"
        ),
        call_a=(
            "<tool_calls>\n"
            '{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}\n'
            "</tool_calls>"
        ),
        calls_ab=(
            "<tool_calls>\n"
            '{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}\n'
            '{"name": "get_time", "arguments": {"tz": "UTC"}}\n'
            "</tool_calls>"
        ),
    ),
    "minimax2": Expected(
        tools=(
            "\n"
            "\n"
            "# Tools\n"
            "\n"
            "You may call one or more tools to assist with the user query.\n"
            "Here are the tools available in JSONSchema format:\n"
            "\n"
            "<tools>\n"
            '<tool>{"name": "get_weather", "description": "Get weather", "parameters": {"type": '
            '"object", "properties": {"city": {"type": "string", "description": "City name"}, "unit": '
            '{"type": "string", "enum": ["c", "f"]}, "days": {"type": "array", "items": {"type": '
            '"integer"}}}, "required": ["city"]}}</tool>\n'
            "</tools>\n"
            "\n"
            "When making tool calls, use XML format to invoke tools and pass parameters:\n"
            "\n"
            "<minimax:tool_call>\n"
            '<invoke name="tool-name-1">\n'
            '<parameter name="param-key-1">param-value-1</parameter>\n'
            '<parameter name="param-key-2">param-value-2</parameter>\n'
            "...\n"
            "</invoke>\n"
            "</minimax:tool_call>"
        ),
        call_a=(
            '<invoke name="get_weather">\n'
            '<parameter name="city">北京</parameter>\n'
            '<parameter name="days">[1, 2]</parameter>\n'
            "</invoke>"
        ),
        calls_ab=(
            '<invoke name="get_weather">\n'
            '<parameter name="city">北京</parameter>\n'
            '<parameter name="days">[1, 2]</parameter>\n'
            "</invoke>\n"
            '<invoke name="get_time">\n'
            '<parameter name="tz">UTC</parameter>\n'
            "</invoke>"
        ),
    ),
    "mistral": Expected(
        tools=(
            '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", '
            '"description": "Get weather", "parameters": {"type": "object", "properties": {"city": '
            '{"type": "string", "description": "City name"}, "unit": {"type": "string", "enum": ["c", '
            '"f"]}, "days": {"type": "array", "items": {"type": "integer"}}}, "required": '
            '["city"]}}}][/AVAILABLE_TOOLS]'
        ),
        call_a='[{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}]',
        calls_ab=(
            '[{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}, {"name": '
            '"get_time", "arguments": {"tz": "UTC"}}]'
        ),
    ),
    "qwen": Expected(
        tools=(
            "\n"
            "\n"
            "# Tools\n"
            "\n"
            "You may call one or more functions to assist with the user query.\n"
            "\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            "<tools>\n"
            '{"type": "function", "function": {"name": "get_weather", "description": "Get weather", '
            '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": '
            '"City name"}, "unit": {"type": "string", "enum": ["c", "f"]}, "days": {"type": "array", '
            '"items": {"type": "integer"}}}, "required": ["city"]}}}\n'
            "</tools>\n"
            "\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n"
            "<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n'
            "</tool_call>"
        ),
        call_a=(
            "<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}\n'
            "</tool_call>"
        ),
        calls_ab=(
            "<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "北京", "days": [1, 2]}}\n'
            "</tool_call>\n"
            "<tool_call>\n"
            '{"name": "get_time", "arguments": {"tz": "UTC"}}\n'
            "</tool_call>"
        ),
    ),
    "qwen3_5": Expected(
        tools=(
            "\n"
            "\n"
            "# Tools\n"
            "\n"
            "You have access to the following functions:\n"
            "\n"
            "<tools>\n"
            '{"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", '
            '"properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": '
            '"string", "enum": ["c", "f"]}, "days": {"type": "array", "items": {"type": "integer"}}}, '
            '"required": ["city"]}}\n'
            "</tools>\n"
            "\n"
            "If you choose to call a function ONLY reply in the following format with NO suffix:\n"
            "\n"
            "<tool_call>\n"
            "<function=example_function_name>\n"
            "<parameter=example_parameter_1>\n"
            "value_1\n"
            "</parameter>\n"
            "<parameter=example_parameter_2>\n"
            "This is the value for the second parameter\n"
            "that can span\n"
            "multiple lines\n"
            "</parameter>\n"
            "</function>\n"
            "</tool_call>\n"
            "\n"
            "<IMPORTANT>\n"
            "Reminder:\n"
            "- Function calls MUST follow the specified format: an inner <function=...></function> "
            "block must be nested within <tool_call></tool_call> XML tags\n"
            "- Required parameters MUST be specified\n"
            "- You may provide optional reasoning for your function call in natural language BEFORE "
            "the function call, but NOT after\n"
            "- If there is no function call available, answer the question like normal with your "
            "current knowledge and do not tell the user about function calls\n"
            "</IMPORTANT>"
        ),
        call_a=(
            "<tool_call>\n"
            "<function=get_weather>\n"
            "<parameter=city>\n"
            "北京\n"
            "</parameter>\n"
            "<parameter=days>\n"
            "[1, 2]\n"
            "</parameter>\n"
            "</function>\n"
            "</tool_call>"
        ),
        calls_ab=(
            "<tool_call>\n"
            "<function=get_weather>\n"
            "<parameter=city>\n"
            "北京\n"
            "</parameter>\n"
            "<parameter=days>\n"
            "[1, 2]\n"
            "</parameter>\n"
            "</function>\n"
            "</tool_call>\n"
            "<tool_call>\n"
            "<function=get_time>\n"
            "<parameter=tz>\n"
            "UTC\n"
            "</parameter>\n"
            "</function>\n"
            "</tool_call>"
        ),
    ),
    "seed_oss": Expected(
        tools=(
            "system\n"
            "You are Doubao, a helpful AI assistant. You may call one or more functions to assist with "
            "the user query.Tool List:\n"
            "You are authorized to use the following tools (described in JSON Schema format). Before "
            "performing any task, you must decide how to call them based on the descriptions and "
            "parameters of these tools.\n"
            '[{"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", '
            '"properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": '
            '"string", "enum": ["c", "f"]}, "days": {"type": "array", "items": {"type": "integer"}}}, '
            '"required": ["city"]}}]\n'
            "工具调用请遵循如下格式:\n"
            "<seed:tool_call>\n"
            "<function=example_function_name>\n"
            "<parameter=example_parameter_1>value_1</parameter>\n"
            "<parameter=example_parameter_2>This is the value for the second parameter\n"
            "that can span\n"
            "multiple lines</parameter>\n"
            "</function>\n"
            "</seed:tool_call>\n"
        ),
        call_a=(
            "\n"
            "<seed:tool_call>\n"
            "<function=get_weather\n"
            "<parameter=city>北京</parameter>\n"
            "<parameter=days>[1, 2]</parameter>\n"
            "</function>\n"
            "</seed:tool_call>"
        ),
        calls_ab=(
            "\n"
            "<seed:tool_call>\n"
            "<function=get_weather\n"
            "<parameter=city>北京</parameter>\n"
            "<parameter=days>[1, 2]</parameter>\n"
            "</function>\n"
            "</seed:tool_call>\n"
            "\n"
            "<seed:tool_call>\n"
            "<function=get_time\n"
            "<parameter=tz>UTC</parameter>\n"
            "</function>\n"
            "</seed:tool_call>"
        ),
    ),
}

PARALLEL = sorted(name for name, expected in EXPECTED.items() if expected.calls_ab is not None)


def test_every_registered_format_is_checked():
    assert sorted(EXPECTED) == tool_format_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tools_text(name):
    expected = EXPECTED[name].tools.replace("{date}", datetime.now().strftime("%d %b %Y"))
    assert get_tool_format(name).tools_text(TOOLS) == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_single_call_text(name):
    assert get_tool_format(name).calls_text([CALL_A]) == EXPECTED[name].call_a


@pytest.mark.parametrize("name", PARALLEL)
def test_parallel_calls_text(name):
    assert get_tool_format(name).calls_text([CALL_A, CALL_B]) == EXPECTED[name].calls_ab


def test_glm4_refuses_parallel_calls():
    with pytest.raises(ValueError):
        get_tool_format("glm4").calls_text([CALL_A, CALL_B])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_single_call_reads_back(name):
    fmt = get_tool_format(name)
    assert fmt.parse_calls(fmt.calls_text([CALL_A])) == [CALL_A]


@pytest.mark.parametrize("name", PARALLEL)
def test_parallel_calls_read_back(name):
    fmt = get_tool_format(name)
    assert fmt.parse_calls(fmt.calls_text([CALL_A, CALL_B])) == [CALL_A, CALL_B]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plain_answer_has_no_calls(name):
    assert get_tool_format(name).parse_calls("It is sunny in Beijing.") is None


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"seed_oss"}))
def test_openai_style_tools_give_the_same_text(name):
    # every format but seed_oss (which dumps the list as given) unwraps or wraps each tool itself
    wrapped = [{"type": "function", "function": tool} for tool in TOOLS]
    fmt = get_tool_format(name)
    assert fmt.tools_text(wrapped) == fmt.tools_text(TOOLS)


ODD_ARGUMENTS: dict[str, Any] = {
    "flag": True,
    "off": False,
    "none": None,
    "ratio": 1.5,
    "neg": -3,
    "empty": "",
    "nested": {"b": [1, {"q": "s"}], "a": False},
}


@pytest.mark.parametrize("name", ["gemma4", "lfm2", "minimax1", "minimax2", "seed_oss", "glm4_moe"])
def test_odd_values_read_back(name):
    fmt = get_tool_format(name)
    call = ("f", ODD_ARGUMENTS)
    assert fmt.parse_calls(fmt.calls_text([call])) == [call]


def test_gemma4_writes_sorted_bare_keys_and_keywords():
    text = get_tool_format("gemma4").calls_text([("f", {"z": None, "a": {"y": True, "b": [1.5, "x"]}})])
    assert text == '<|tool_call>call:f{a:{b:[1.5,<|"|>x<|"|>],y:true},z:null}<tool_call|>'


def test_lfm2_reads_json_keywords_at_any_depth():
    text = '<|tool_call_start|>[f(a=true, b=[null, {"c": false}], s="x")]<|tool_call_end|>'
    assert get_tool_format("lfm2").parse_calls(text) == [
        ("f", {"a": True, "b": [None, {"c": False}], "s": "x"})
    ]


def test_lfm2_refuses_positional_arguments():
    assert get_tool_format("lfm2").parse_calls("<|tool_call_start|>[f(1, a=2)]<|tool_call_end|>") is None


def test_seed_oss_reads_the_closed_function_tag_too():
    # calls_text writes `<function=name` (upstream's slip); the model's own template writes `<function=name>`
    text = (
        "<seed:tool_call>\n<function=get_time>\n<parameter=tz>UTC</parameter>\n</function>\n</seed:tool_call>"
    )
    assert get_tool_format("seed_oss").parse_calls(text) == [CALL_B]


def test_minimax2_reads_calls_inside_the_wrapper():
    text = '<minimax:tool_call>\n<invoke name="get_time">\n<parameter name="tz">UTC</parameter>\n</invoke>\n</minimax:tool_call>'
    assert get_tool_format("minimax2").parse_calls(text) == [CALL_B]


def test_glm4_moe_reads_closed_calls():
    text = "<tool_call>get_time\n<arg_key>tz</arg_key>\n<arg_value>UTC</arg_value>\n</tool_call>"
    assert get_tool_format("glm4_moe").parse_calls(text) == [CALL_B]


def test_minimax1_refuses_a_bad_line():
    text = '<tool_calls>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\nnot json\n</tool_calls>'
    assert get_tool_format("minimax1").parse_calls(text) is None
