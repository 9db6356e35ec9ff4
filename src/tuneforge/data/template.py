"""Render conversations with a chat template into token ids and labels that train only on assistant tokens.

The template is the tokenizer's own `chat_template` unless `template:` names a built-in one
(a Jinja file in `templates/`). Assistant spans are found on the rendered text: an answer
starts where the generation prompt ends and stops at the end of its turn (end-of-turn token
included, trailing whitespace not). Chat renders the prompt with the same function, so
inference sees exactly what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2.runtime import new_context

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
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


@lru_cache(maxsize=32)
def _compiled(template: str) -> tuple[Any, dict[str, Any]]:
    """The template compiled once, in transformers' own sandboxed Jinja environment, and its globals
    flattened into one dict (Jinja keeps them in a ChainMap that costs more to merge than the render)."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    compiled = _compile_jinja_template(template)
    return compiled, dict(compiled.globals)


def _render(
    tokenizer: PreTrainedTokenizerBase,
    chat: list[dict[str, Any]],
    template: str,
    gen: bool,
    specials: dict[str, Any] | None = None,
) -> str:
    """What `apply_chat_template(tokenize=False)` returns, without its per-call overhead (several times
    faster: one dict for the render context, no ChainMap merge). `specials` is the tokenizer's
    special_tokens_map, passed in by callers that render many rows."""
    compiled, variables = _compiled(template)
    context = new_context(  # globals are already in the dict: skips Jinja's ChainMap walk per render
        compiled.environment,
        compiled.name,
        compiled.blocks,
        {
            **variables,
            **(specials if specials is not None else tokenizer.special_tokens_map),
            "messages": chat,
            "tools": None,
            "documents": None,
            "add_generation_prompt": gen,
        },
        shared=True,
    )
    try:
        return "".join(compiled.root_render_func(context))
    except Exception:
        return compiled.environment.handle_exception()  # re-raises with the template's line in the traceback


def assistant_spans(
    conversation: Conversation,
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    specials: dict[str, Any] | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of every assistant answer in it.

    An answer starts where the text rendered up to its generation prompt ends, and stops where the text
    rendered up to and including it ends (trailing whitespace excluded), so its end-of-turn token is inside.
    """
    chat = conversation.as_chat()
    offset = 1 if conversation.system else 0
    specials = tokenizer.special_tokens_map if specials is None else specials
    text = _render(tokenizer, chat, template, False, specials)
    spans = []
    last = len(conversation.messages) - 1
    for i, message in enumerate(conversation.messages):
        if message.role != "assistant":
            continue
        upto = offset + i
        prompt = _render(tokenizer, chat[:upto], template, True, specials)
        turn = text if i == last else _render(tokenizer, chat[: upto + 1], template, False, specials)
        if not (text.startswith(prompt) and text.startswith(turn) and turn.startswith(prompt)):
            raise DataError(
                f"{conversation.source}: the chat template renders earlier turns differently once later turns "
                "are added, so answer tokens cannot be located; choose a built-in `template:` instead",
                "template",
            )
        spans.append((len(prompt), len(turn.rstrip())))
    return text, spans


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
