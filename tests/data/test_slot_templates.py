"""LLaMA-Factory's named templates render the pieces LLaMA-Factory renders.

The expected strings below were produced by LLaMA-Factory's own template code (commit ff6d4d12eeb0) with a
tokenizer stand-in that marks each separately tokenized element as «...» and special tokens as <BOS>/<EOS>,
so they pin both the text and where tokenization restarts.
"""

import json

import pytest

from tuneforge.data.conversation import Conversation, Message
from tuneforge.data.slots import Special, catalog_names, slot_template

TOOLS = json.dumps(
    [
        {
            "name": "f",
            "description": "d",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer", "description": "A"}},
                "required": ["a"],
            },
        }
    ]
)
CALL = ({"name": "f", "arguments": {"a": 1}},)
TOOL_CHAT = Conversation(
    [
        Message("user", "Hi"),
        Message("assistant", "", CALL),
        Message("tool", '{"r": 2}'),
        Message("assistant", "Done"),
    ],
    tools=TOOLS,
)


def shown(pieces) -> str:
    return "".join(f"<{p.which.upper()}>" if isinstance(p, Special) else f"«{p}»" for p in pieces if p != "")


def rendered(name: str, conversation: Conversation, **options) -> list[tuple[str, str]]:
    template = slot_template(name).configured(None, None, options.get("enable_thinking", True))
    return [(shown(p), shown(t)) for p, t in template.turns(conversation, options.get("last_only", False))]


def test_all_124_llamafactory_names_resolve():
    names = catalog_names()
    assert len(names) == 124
    for name in names:
        assert slot_template(name).user


def test_qwen_with_tools_function_call_and_result():
    (p0, t0), (p1, t1) = rendered("qwen", TOOL_CHAT)
    assert p0.startswith(
        "«<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
    )
    assert (
        '<tools>\n{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": '
        '"object", "properties": {"a": {"type": "integer", "description": "A"}}, "required": ["a"]}}}\n</tools>'
    ) in p0
    assert p0.endswith("</tool_call><|im_end|>\n»«<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n»")
    assert t0 == '«<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n»'
    assert (
        p1
        == '«<|im_start|>user\n<tool_response>\n{"r": 2}\n</tool_response><|im_end|>\n<|im_start|>assistant\n»'
    )
    assert t1 == "«Done<|im_end|>\n»"


def test_llama3_llama2_and_default():
    chat = Conversation([Message("user", "Hi"), Message("assistant", "Yo")], system="SYS")
    assert rendered("llama3", chat) == [
        (
            "<BOS>«<|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>»"
            "«<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n»",
            "«Yo<|eot_id|>»",
        )
    ]
    two = Conversation(
        [
            Message("user", "Hi"),
            Message("assistant", "Yo"),
            Message("user", "Q2"),
            Message("assistant", "A2"),
        ],
        system="SYS",
    )
    assert rendered("llama2", two) == [
        ("<BOS>«[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi [/INST]»", "«Yo»<EOS>"),
        ("<BOS>«[INST] Q2 [/INST]»", "«A2»<EOS>"),
    ]
    bare = Conversation([Message("user", "Hi"), Message("assistant", "Yo")])
    assert rendered("default", bare) == [("«Human: Hi»<EOS>«\nAssistant:»", "«Yo»<EOS>«\n»")]


def test_mistral_puts_tools_in_the_first_user_turn():
    (p0, t0), (p1, t1) = rendered("mistral", TOOL_CHAT)
    assert p0.startswith("<BOS>«[INST] [AVAILABLE_TOOLS] [{")
    assert p0.endswith("}}}][/AVAILABLE_TOOLS]\n\nHi[/INST]»")
    assert t0 == '«[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}]»<EOS>'
    assert p1 == '«[TOOL_RESULTS] {"content": {"r": 2}}[/TOOL_RESULTS]»'
    assert t1 == "« Done»<EOS>"


def test_glm4_tools_and_calls():
    (p0, t0), (p1, t1) = rendered("glm4", TOOL_CHAT)
    assert p0.startswith("«[gMASK]<sop>»«<|system|>\n你是一个名为 ChatGLM 的人工智能助手。")
    assert p0.endswith("在调用上述函数时，请使用 Json 格式表示调用的参数。»«<|user|>\nHi<|assistant|>»")
    assert t0 == '«f\n{"a": 1}»'
    assert p1 == '«<|observation|>\n{"r": 2}<|assistant|>»'
    assert t1 == "«\nDone»"


THINK = Conversation(
    [
        Message("user", "Q1"),
        Message("assistant", "<think>\nr1\n</think>\n\nA1"),
        Message("user", "Q2"),
        Message("assistant", "A2"),
    ]
)
Q1 = "«<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n»"
Q2 = "«<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n»"
EMPTY = "«<think>\n\n</think>\n\n»"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"enable_thinking": True},
            [(Q1, "«<think>\nr1\n</think>\n\nA1<|im_end|>\n»"), (Q2, EMPTY + "«A2<|im_end|>\n»")],
        ),
        ({"enable_thinking": False}, [(Q1 + EMPTY, "«A1<|im_end|>\n»"), (Q2 + EMPTY, "«A2<|im_end|>\n»")]),
        (
            {"enable_thinking": None},
            [(Q1, "«<think>\nr1\n</think>\n\nA1<|im_end|>\n»"), (Q2 + EMPTY, "«A2<|im_end|>\n»")],
        ),
        # mask_history: earlier answers lose their thoughts, only the last gets an empty one
        (
            {"enable_thinking": True, "last_only": True},
            [(Q1, "«A1<|im_end|>\n»"), (Q2, EMPTY + "«A2<|im_end|>\n»")],
        ),
    ],
)
def test_qwen3_thinking_modes(options, expected):
    assert rendered("qwen3", THINK, **options) == expected


def test_nothink_template_adds_no_thought():
    assert rendered("qwen3_nothink", THINK)[1] == (Q2, "«A2<|im_end|>\n»")


def test_unknown_name_suggests_close_ones():
    from tuneforge.data.conversation import DataError

    with pytest.raises(DataError, match="did you mean qwen3"):
        slot_template("qwen33")
