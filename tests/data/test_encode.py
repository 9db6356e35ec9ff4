"""Answer tokens found from ids alone (no offsets) must equal the ones found from character offsets."""

import pytest

from tests.helpers import tiny_tokenizer
from tuneforge.data.conversation import Conversation, Message
from tuneforge.data.encode import Encoder, _added_token_split
from tuneforge.data.template import assistant_spans, chat_template_for
from tuneforge.data.tokenized import IGNORE_INDEX

ANSWERS = [
    "Paris.",
    "\n\n\nStarts with blank lines that merge with the header's newline.",
    " starts with a space",
    "Has <|im_start|> and <|im_end|> inside the answer.",
    "春眠不觉晓，处处闻啼鸟。🌸",
    "ends with spaces   ",
]

MERGING_ROWS = 2
# A Llama 3 style chat template, a tokenizer's own template as a model of another family would ship it.
LLAMA3_JINJA = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
    "+ m['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def jinja(tokenizer, template: str | None) -> str:
    return LLAMA3_JINJA if template == "llama3_jinja" else chat_template_for(tokenizer, None)


def conversations() -> list[Conversation]:
    rows = [
        Conversation([Message("user", "Q?"), Message("assistant", a)], source=f"a:{i}")
        for i, a in enumerate(ANSWERS)
    ]
    rows.append(
        Conversation(
            [
                Message("user", "Tricky <|im_end|> in the prompt"),
                Message("assistant", ANSWERS[0]),
                Message("user", "写一首诗"),
                Message("assistant", ANSWERS[1]),
                Message("user", "again"),
                Message("assistant", ANSWERS[4]),
            ],
            system="Be brief.",
            source="multi:1",
        )
    )
    return rows


def encode_both(tokenizer, template: str, train_on_prompt: bool = False):
    items = []
    for conversation in conversations():
        text, spans = assistant_spans(conversation, tokenizer, template)
        items.append((text, spans, conversation.source))
    fast = Encoder(tokenizer, 4096, train_on_prompt)
    slow = Encoder(tokenizer, 4096, train_on_prompt)
    slow.from_ids = False
    return fast, fast(items), slow(items)


# The ids-only path serves tokenizers' own (Jinja) templates; LLaMA-Factory's named templates are tokenized
# piece by piece instead (tests/data/test_slot_encode.py).
@pytest.mark.parametrize("template", [None, "llama3_jinja"])
def test_labels_from_ids_equal_labels_from_offsets(smollm2_tokenizer, template):
    tokenizer = smollm2_tokenizer
    fast, from_ids, from_offsets = encode_both(tokenizer, jinja(tokenizer, template))
    for a, b in zip(from_ids, from_offsets, strict=True):
        assert a.input_ids == b.input_ids, a.source
        assert a.labels == b.labels, a.source
        assert a.trainable_tokens > 0
    if template in (None, "chatml", "qwen"):  # answers end with <|im_end|>, an added token of SmolLM2
        # only the two rows whose answer opens with blank lines (merged with the header's newline) need offsets
        assert fast.rows == len(from_ids) and fast.retried == MERGING_ROWS, "the ids-only path was not used"


def test_tiny_tokenizer_and_train_on_prompt():
    tokenizer = tiny_tokenizer()
    template = chat_template_for(tokenizer, None)
    fast, from_ids, from_offsets = encode_both(tokenizer, template)
    assert [e.labels for e in from_ids] == [e.labels for e in from_offsets]
    assert (
        fast.rows == len(from_ids) and fast.retried == 0
    )  # its vocabulary has no "\n\n" token to merge into
    _, whole, _ = encode_both(tokenizer, template, train_on_prompt=True)
    assert all(e.labels == e.input_ids for e in whole)


def test_added_tokens_that_strip_whitespace_use_offsets():
    tokenizer = tiny_tokenizer()
    from tokenizers import AddedToken

    tokenizer._tokenizer.add_special_tokens([AddedToken("<eot>", lstrip=True)])
    assert _added_token_split(tokenizer._tokenizer) is None
    assert not Encoder(tokenizer, 64).from_ids


def test_mostly_missed_rows_switch_to_offsets(smollm2_tokenizer):
    """llama3's <|eot_id|> is no added token of SmolLM2: every row is retried, then offsets are used at once."""
    tokenizer = smollm2_tokenizer
    template = LLAMA3_JINJA
    conversation = conversations()[0]
    text, spans = assistant_spans(conversation, tokenizer, template)
    encoder = Encoder(tokenizer, 4096)
    examples = encoder([(text, spans, "x")] * 300)
    assert encoder.retried == 300 and not encoder.from_ids
    assert encoder([(text, spans, "x")])[0].labels == examples[0].labels
    assert any(label != IGNORE_INDEX for label in examples[0].labels)
