"""Every LLaMA-Factory template name: renders, trains exactly its answers, and chat prompts match training."""

import pytest

from tests.helpers import tiny_tokenizer
from tuneforge.data.conversation import Conversation, Message
from tuneforge.data.encode import render_with_loss_mask
from tuneforge.data.template import (
    builtin_templates,
    chat_template_for,
    render_prompt,
    template_mismatch,
)
from tuneforge.data.tokenized import IGNORE_INDEX

CONVERSATION = Conversation(
    [Message("user", "Q1"), Message("assistant", "A1"), Message("user", "Q2"), Message("assistant", "A2")],
    system="S",
)
# SmolLM2's tokenizer (bos <|im_start|>, eos <|im_end|>) with each template, as LLaMA-Factory renders it
GOLDEN = {
    "chatml": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
    "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n",
    "alpaca": "S### Instruction:\nQ1\n\n### Response:\nA1<|im_end|>\n\n### Instruction:\nQ2\n\n### Response:\nA2<|im_end|>\n\n",
    "default": "System: S<|im_end|>\nHuman: Q1<|im_end|>\nAssistant:A1<|im_end|>\nHuman: Q2<|im_end|>\nAssistant:A2<|im_end|>\n",
    "empty": "SQ1A1Q2A2",
    "llama2": "<|im_start|>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST]A1<|im_end|><|im_start|>[INST] Q2 [/INST]A2<|im_end|>",
    "vicuna": "SUSER: Q1 ASSISTANT:A1<|im_end|>USER: Q2 ASSISTANT:A2<|im_end|>",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_named_template_renders_llamafactory_text(name, smollm2_tokenizer):
    assert (
        chat_template_for(smollm2_tokenizer, name).render_text(CONVERSATION, smollm2_tokenizer)
        == GOLDEN[name]
    )


def runs(tokenizer, example) -> list[str]:
    out, current = [], []
    for token, label in [*zip(example.input_ids, example.labels, strict=True), (None, IGNORE_INDEX)]:
        if label != IGNORE_INDEX:
            assert label == token or label == tokenizer.eos_token_id
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


@pytest.mark.parametrize("name", builtin_templates())
def test_every_template_trains_its_answers_and_chat_prompts_match(name, any_tokenizer):
    tok = any_tokenizer
    template = chat_template_for(tok, name)
    example = render_with_loss_mask(CONVERSATION, tok, template, cutoff_len=512)
    trained = "".join(runs(tok, example))
    assert "A1" in trained and "A2" in trained and "Q1" not in trained and "Q2" not in trained
    # the chat prompt is exactly the training ids before the first answer
    prompt = render_prompt(CONVERSATION.as_chat()[:2], tok, template)
    assert example.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE_INDEX for label in example.labels[: len(prompt)])


def test_mismatch_with_the_tokenizer_template_is_explained(smollm2_tokenizer):
    assert template_mismatch(smollm2_tokenizer, None) is None
    assert template_mismatch(smollm2_tokenizer, "chatml") is None  # SmolLM2's own is ChatML
    warning = template_mismatch(smollm2_tokenizer, "llama3")
    assert "renders differently" in warning and "<|start_header_id|>" in warning
