"""Every built-in template: its exact text for a fixed conversation, and masks that cover exactly the answers."""

import pytest

from tests.helpers import tiny_tokenizer
from tuneforge.data.conversation import Conversation, Message
from tuneforge.data.encode import render_with_loss_mask
from tuneforge.data.template import (
    IGNORE_INDEX,
    builtin_templates,
    chat_template_for,
    render_prompt,
    template_mismatch,
)

CHAT = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "A2"},
]
SYS = "<|im_start|>system\nS<|im_end|>\n"
GOLDEN = {
    "alpaca": "S\n\n### Instruction:\nQ1\n\n### Response:\nA1</s>\n\n### Instruction:\nQ2\n\n### Response:\nA2</s>\n\n",
    "baichuan2": "S<reserved_106>Q1<reserved_107>A1</s><reserved_106>Q2<reserved_107>A2</s>",
    "chatglm3": "[gMASK]sop<|system|>\nS<|user|>\nQ1<|assistant|>\nA1</s><|user|>\nQ2<|assistant|>\nA2</s>",
    "chatml": SYS + "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
    "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n",
    "default": "System: S</s>\nHuman: Q1</s>\nAssistant:A1</s>\nHuman: Q2</s>\nAssistant:A2</s>\n",
    "empty": "SQ1A1</s>Q2A2</s>",
    "gemma": "<s><start_of_turn>user\nS\n\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
    "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\nA2<end_of_turn>\n",
    "llama2": "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST] A2 </s>",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    "Q1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>",
    "mistral": "<s>[INST] S\n\nQ1[/INST] A1</s>[INST] Q2[/INST] A2</s>",
    "phi": "<|system|>\nS<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>\nA1<|end|>\n<|user|>\nQ2<|end|>\n"
    "<|assistant|>\nA2<|end|>\n",
    "qwen": SYS + "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
    "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n",
    "vicuna": "S USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>",
}
# what each template trains on (SmolLM2's EOS is <|im_end|>)
ANSWERS = {
    "chatglm3": ["\nA1<|im_end|>", "\nA2<|im_end|>"],
    "gemma": ["A1<end_of_turn>", "A2<end_of_turn>"],
    "llama2": [" A1 <|im_end|>", " A2 <|im_end|>"],
    # SmolLM2's tokenizer does not know <|eot_id|>; its BPE token "><" straddles the end of the first
    # answer and starts inside it, so it is trained. A Llama 3 tokenizer has <|eot_id|> as one token.
    "llama3": ["A1<|eot_id|><", "A2<|eot_id|>"],
    "mistral": [" A1<|im_end|>", " A2<|im_end|>"],
    "phi": ["A1<|end|>", "A2<|end|>"],
    "vicuna": [" A1<|im_end|>", " A2<|im_end|>"],
}


def test_the_thirteen_builtins_exist():
    assert set(builtin_templates()) == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_builtin_renders_the_documented_format(name, smollm2_tokenizer):
    text = smollm2_tokenizer.apply_chat_template(
        CHAT,
        chat_template=chat_template_for(smollm2_tokenizer, name),
        tokenize=False,
        bos_token="<s>",
        eos_token="</s>",
    )
    assert text == GOLDEN[name]


def runs(tokenizer, example) -> list[str]:
    out, current = [], []
    for token, label in [*zip(example.input_ids, example.labels, strict=True), (None, IGNORE_INDEX)]:
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            out.append(tokenizer.decode(current))
            current = []
    return out


@pytest.fixture(params=["smollm2", "tiny-bpe"])
def any_tokenizer(request):
    """SmolLM2's tokenizer and a tiny byte-level BPE trained in-process (same special tokens)."""
    if request.param == "smollm2":
        return request.getfixturevalue("smollm2_tokenizer")
    return tiny_tokenizer()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_builtin_masks_cover_exactly_the_answers(name, any_tokenizer, request):
    tok = any_tokenizer
    if name == "llama3" and "smollm2" not in tok.name_or_path:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="the tiny BPE, which has no llama3 markers, merges the '>' of <|eot_id|> with the '<' of the "
                "next <|start_header_id|>: the answer ends inside a token (a template not made for the tokenizer)",
            )
        )
    conversation = Conversation(
        [
            Message("user", "Q1"),
            Message("assistant", "A1"),
            Message("user", "Q2"),
            Message("assistant", "A2"),
        ],
        system="S",
    )
    template = chat_template_for(tok, name)
    example = render_with_loss_mask(conversation, tok, template, cutoff_len=512)
    expected = ANSWERS.get(name, ["A1<|im_end|>", "A2<|im_end|>"])
    assert "".join(runs(tok, example)).replace(" ", "") == "".join(expected).replace(" ", "")
    # the chat prompt is exactly the training text before the first answer (token ids can differ at the
    # boundary when a tokenizer meets a template not made for it; SmolLM2 with its own ChatML is checked by id)
    prompt = render_prompt(conversation.as_chat()[:2], tok, template)
    assert tok.decode(example.input_ids).startswith(tok.decode(prompt))


def test_mismatch_with_the_tokenizer_template_is_explained(smollm2_tokenizer):
    assert template_mismatch(smollm2_tokenizer, None) is None
    assert template_mismatch(smollm2_tokenizer, "chatml") is None  # SmolLM2's own is ChatML
    warning = template_mismatch(smollm2_tokenizer, "llama3")
    assert "renders differently" in warning and "<|start_header_id|>" in warning
