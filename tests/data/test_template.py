import pytest

from tuneforge.data.conversation import Conversation, DataError, Message
from tuneforge.data.encode import render_with_loss_mask
from tuneforge.data.template import (
    chat_template_for,
    render_prompt,
)
from tuneforge.data.tokenized import IGNORE_INDEX


def two_turns(system: str | None = None) -> Conversation:
    return Conversation(
        [
            Message("user", "Hi there"),
            Message("assistant", "Hello! How can I help?"),
            Message("user", "写一首诗"),
            Message("assistant", "春眠不觉晓。"),
        ],
        system=system,
        source="test:1",
    )


def trained_text(tokenizer, example) -> list[str]:
    """Decoded runs of consecutive trainable tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_mask_covers_exactly_the_assistant_tokens_of_two_turns(smollm2_tokenizer):
    tok = smollm2_tokenizer
    template = chat_template_for(tok, None)
    example = render_with_loss_mask(two_turns(), tok, template, cutoff_len=512)
    assert (
        example.input_ids
        == tok.apply_chat_template(two_turns().as_chat(), tokenize=True, return_dict=True)["input_ids"]
    )
    assert trained_text(tok, example) == ["Hello! How can I help?<|im_end|>", "春眠不觉晓。<|im_end|>"]
    # and exactly those: every other position is masked
    answer_ids = [
        tok("Hello! How can I help?<|im_end|>", add_special_tokens=False)["input_ids"],
        tok("春眠不觉晓。<|im_end|>", add_special_tokens=False)["input_ids"],
    ]
    assert example.trainable_tokens == sum(len(a) for a in answer_ids)


def test_mask_history_trains_only_the_last_answer(smollm2_tokenizer):
    tok = smollm2_tokenizer
    example = render_with_loss_mask(two_turns(), tok, chat_template_for(tok, None), 512, mask_history=True)
    assert trained_text(tok, example) == ["春眠不觉晓。<|im_end|>"]


def test_train_on_prompt_trains_everything(smollm2_tokenizer):
    tok = smollm2_tokenizer
    example = render_with_loss_mask(two_turns(), tok, chat_template_for(tok, None), 512, train_on_prompt=True)
    assert example.labels == example.input_ids


def test_cutoff_truncates_and_can_leave_nothing_to_train(smollm2_tokenizer):
    tok = smollm2_tokenizer
    own = chat_template_for(tok, None)
    example = render_with_loss_mask(two_turns(), tok, own, cutoff_len=10, truncation="end")
    assert len(example.input_ids) == 10 and example.trainable_tokens == 0 and example.truncated
    # in proportion (the default) the first answer keeps tokens within the same 10
    kept = render_with_loss_mask(two_turns(), tok, own, cutoff_len=10)
    assert len(kept.input_ids) == 10 and kept.trainable_tokens > 0 and kept.truncated
    assert not render_with_loss_mask(two_turns(), tok, own, cutoff_len=512).truncated


def test_builtin_chatml_matches_smollm2_own_template_when_a_system_prompt_is_given(smollm2_tokenizer):
    tok = smollm2_tokenizer
    conv = two_turns(system="You are terse.")
    own = render_with_loss_mask(conv, tok, chat_template_for(tok, None), 512)
    builtin = render_with_loss_mask(conv, tok, chat_template_for(tok, "chatml"), 512)
    assert own.input_ids == builtin.input_ids
    # LLaMA-Factory's chatml also trains the newline that closes each answer's turn
    assert trained_text(tok, builtin) == ["Hello! How can I help?<|im_end|>\n", "春眠不觉晓。<|im_end|>\n"]


def test_prompt_for_chat_is_the_training_prefix(smollm2_tokenizer):
    tok = smollm2_tokenizer
    template = chat_template_for(tok, None)
    example = render_with_loss_mask(two_turns(), tok, template, 512)
    prompt = render_prompt([{"role": "user", "content": "Hi there"}], tok, template)
    assert example.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE_INDEX for label in example.labels[: len(prompt)])
    assert example.labels[len(prompt)] != IGNORE_INDEX


def test_alpaca_template_masks_answers(smollm2_tokenizer):
    tok = smollm2_tokenizer
    conv = Conversation([Message("user", "Add 2 and 2."), Message("assistant", "4")], source="t:1")
    example = render_with_loss_mask(conv, tok, chat_template_for(tok, "alpaca"), 512)
    assert trained_text(tok, example) == ["4<|im_end|>\n\n"]  # LLaMA-Factory's alpaca answer slot
    assert "### Response:" in tok.decode(example.input_ids)


def test_unknown_template_lists_builtins(smollm2_tokenizer):
    with pytest.raises(DataError, match="template 'chatmll' is unknown; did you mean chatml"):
        chat_template_for(smollm2_tokenizer, "chatmll")


def test_masks_and_parity_on_a_tiny_trained_tokenizer():
    from tests.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    conversation = two_turns(system="Be brief.")
    own = render_with_loss_mask(conversation, tok, chat_template_for(tok, None), 512)
    assert (
        own.input_ids
        == tok.apply_chat_template(conversation.as_chat(), tokenize=True, return_dict=True)["input_ids"]
    )
    assert trained_text(tok, own) == ["Hello! How can I help?<|im_end|>", "春眠不觉晓。<|im_end|>"]
    builtin = render_with_loss_mask(conversation, tok, chat_template_for(tok, "chatml"), 512)
    assert builtin.input_ids == own.input_ids
    assert trained_text(tok, builtin) == ["Hello! How can I help?<|im_end|>\n", "春眠不觉晓。<|im_end|>\n"]


def test_enable_thinking_reaches_a_tokenizers_own_template():
    from tests.helpers import tiny_tokenizer
    from tuneforge.config import DataArguments
    from tuneforge.data.dataset import render_chunk

    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and enable_thinking is defined and not enable_thinking %}NOTHINK {% endif %}"
        "{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    off = render_chunk([two_turns()], DataArguments(enable_thinking=False), tok, tok.chat_template)
    on = render_chunk([two_turns()], DataArguments(), tok, tok.chat_template)
    assert "NOTHINK Hello!" in off[0][0] and "NOTHINK" not in on[0][0]
