"""Render conversations with a chat template into token ids and labels that train only on assistant tokens.

The template is the tokenizer's own `chat_template` unless `template:` names a built-in one
(a Jinja file in `templates/`). Assistant spans are found on the rendered text: an answer
starts where the generation prompt ends and stops at the end of its turn (end-of-turn token
included, trailing whitespace not). Chat renders the prompt with the same function, so
inference sees exactly what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.conversation import Conversation, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
_TEMPLATES_DIR = Path(__file__).with_name("templates")


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in _TEMPLATES_DIR.glob("*.jinja"))


@cache
def _read_template(name: str) -> str:
    path = _TEMPLATES_DIR / f"{name}.jinja"
    if not path.is_file():
        raise DataError(f"template '{name}' is unknown; built-in templates: {', '.join(builtin_templates())}")
    return path.read_text(encoding="utf-8")


def chat_template_for(tokenizer: PreTrainedTokenizerBase, template: str | None) -> str:
    """The Jinja chat template to use: a built-in by name, else the tokenizer's own."""
    if template:
        return _read_template(template)
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the tokenizer has no chat_template; set `template:` to one of " + ", ".join(builtin_templates())
        )
    return tokenizer.chat_template


PROBE = [
    {"role": "system", "content": "You are a probe."},
    {"role": "user", "content": "Hello?"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Bye?"},
]


def template_mismatch(tokenizer: PreTrainedTokenizerBase, template: str | None) -> str | None:
    """When `template:` names a built-in that renders differently from the tokenizer's own chat_template,
    a sentence showing where they part; None when they agree or there is nothing to compare."""
    own = getattr(tokenizer, "chat_template", None)
    if not template or not own:
        return None
    try:
        theirs = _render(tokenizer, PROBE, own, gen=True)
    except Exception:  # the model's own template may reject the probe (e.g. no system role)
        return None
    ours = _render(tokenizer, PROBE, _read_template(template), gen=True)
    if ours == theirs:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
    )
    return (
        f"template '{template}' renders differently from the tokenizer's own chat_template, from character {at}: "
        f"built-in {ours[at : at + 40]!r} vs tokenizer {theirs[at : at + 40]!r}. A model trained with one "
        "template and served with another may not stop or may ramble; leave `template` empty to use the "
        "tokenizer's own"
    )


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    source: str = "?"
    truncated: bool = False

    @property
    def trainable_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _render(tokenizer: PreTrainedTokenizerBase, chat: list[dict[str, Any]], template: str, gen: bool) -> str:
    return tokenizer.apply_chat_template(
        chat, chat_template=template, tokenize=False, add_generation_prompt=gen
    )


def assistant_spans(
    conversation: Conversation, tokenizer: PreTrainedTokenizerBase, template: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of every assistant answer in it."""
    chat = conversation.as_chat()
    offset = 1 if conversation.system else 0
    text = _render(tokenizer, chat, template, gen=False)
    spans = []
    for i, message in enumerate(conversation.messages):
        if message.role != "assistant":
            continue
        upto = offset + i
        prompt = _render(tokenizer, chat[:upto], template, gen=True)
        turn = _render(tokenizer, chat[: upto + 1], template, gen=False)
        if not (text.startswith(prompt) and text.startswith(turn) and turn.startswith(prompt)):
            raise DataError(
                f"{conversation.source}: the chat template renders earlier turns differently once later turns "
                "are added, so answer tokens cannot be located; choose a built-in `template:` instead"
            )
        end = len(turn.rstrip())
        spans.append((len(prompt), end))
    return text, spans


def render_with_loss_mask(
    conversation: Conversation,
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    cutoff_len: int,
    train_on_prompt: bool = False,
    mask_history: bool = False,
) -> TokenizedExample:
    """Token ids and labels: labels equal ids on assistant tokens and IGNORE_INDEX elsewhere, cut to `cutoff_len`."""
    text, spans = assistant_spans(conversation, tokenizer, template)
    if mask_history:
        spans = spans[-1:]
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for index, (start, _end) in enumerate(encoding["offset_mapping"]):
        if train_on_prompt or any(s <= start < e for s, e in spans):
            labels[index] = ids[index]
    return TokenizedExample(ids[:cutoff_len], labels[:cutoff_len], conversation.source, len(ids) > cutoff_len)


def render_prompt(
    messages: list[dict[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    system: str | None = None,
) -> list[int]:
    """Token ids of a chat ready for the next assistant answer, rendered as in training."""
    chat = list(messages)
    if system and not (chat and chat[0]["role"] == "system"):
        chat = [{"role": "system", "content": system}, *chat]
    text = _render(tokenizer, chat, template, gen=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
