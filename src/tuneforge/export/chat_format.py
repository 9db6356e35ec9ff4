"""The chat format a run trained with, written for the programs that serve an export.

A conversation's prompt text is decomposed into the text around each kind of turn by rendering the run's
template (a tokenizer's Jinja or a LLaMA-Factory named template) with marker contents:

    with a system prompt:    HEAD_S system MID_S user1 AFTER_USER ANSWER_PREFIX answer1 AFTER_ANSWER user2 AFTER_USER
    without one:             HEAD   user1  AFTER_USER ...

From those pieces come a Jinja `chat_template` (for named templates, which have none) and Ollama's Go
`TEMPLATE`; both are checked against the original on a three-turn conversation before they are written,
and a template whose turns do not decompose this way (the system text moving into the last user turn,
say) is reported instead of translated wrongly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tuneforge.data.template import ChatTemplate, prompt_text

S, U1, A1, U2, A2, U3 = "\x01SYS\x01", "\x01U1\x01", "\x01A1\x01", "\x01U2\x01", "\x01A2\x01", "\x01U3\x01"


class NotTranslatable(Exception):
    """The template's turns do not follow one fixed pattern."""


@dataclass(frozen=True)
class ChatPieces:
    head_with_system: str  # before the system text
    after_system: str  # between the system text and the first user message
    head: str  # before the first user message when there is no system prompt (may hold a default one)
    after_user: str  # after each user message: its end and the answer's header (where a prompt ends)
    answer_prefix: str  # text an answer starts with that is not part of the prompt (mistral's space)
    after_answer: str  # after each answer: its end and the next user message's header


def _between(text: str, start: str, end: str) -> str:
    i, j = text.index(start) + len(start), text.index(end)
    return text[i:j]


def chat_pieces(template: ChatTemplate, tokenizer: Any) -> ChatPieces:
    """The pieces of `template` (see the module doc); `NotTranslatable` when they are not the same everywhere."""

    def render(messages: list[tuple[str, str]]) -> str:
        return prompt_text([{"role": r, "content": c} for r, c in messages], tokenizer, template)

    try:
        with_system = render([("system", S), ("user", U1), ("assistant", A1), ("user", U2)])
        without = render([("user", U1), ("assistant", A1), ("user", U2), ("assistant", A2), ("user", U3)])
    except Exception as err:  # a template that rejects this shape of conversation
        raise NotTranslatable(f"the template cannot render a plain conversation ({err})") from None
    if any(m not in with_system for m in (S, U1, A1, U2)) or S in without:
        raise NotTranslatable("the template does not keep each message's text in its place")
    if not (with_system.index(S) < with_system.index(U1) < with_system.index(A1) < with_system.index(U2)):
        raise NotTranslatable("the template moves the system text after the first user message")
    final = without[without.index(U3) + len(U3) :]  # how a prompt ends: the answer's header
    mid = _between(without, U1, A1)
    if not mid.startswith(final):
        raise NotTranslatable("the text after a user message depends on where the turn is")
    pieces = ChatPieces(
        head_with_system=with_system[: with_system.index(S)],
        after_system=_between(with_system, S, U1),
        head=without[: without.index(U1)],
        after_user=final,
        answer_prefix=mid[len(final) :],
        after_answer=_between(without, A1, U2),
    )
    same = (
        _between(without, U2, A2) == mid
        and _between(without, A2, U3) == pieces.after_answer
        and with_system.endswith(U2 + final)
        and _between(with_system, U1, A1) == mid
        and _between(with_system, A1, U2) == pieces.after_answer
    )
    if not same:
        raise NotTranslatable("the text around a turn depends on where the turn is")
    return pieces


def jinja_template(pieces: ChatPieces) -> str:
    """A Jinja chat template (as transformers, vLLM and SGLang read them) that renders the same prompt text."""
    q = json.dumps  # Jinja string literals: JSON's escaping is a subset Jinja reads
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        f"{{{{ {q(pieces.head_with_system)} }}}}{{{{ messages[0]['content'] }}}}{{{{ {q(pieces.after_system)} }}}}"
        "{%- set rest = messages[1:] -%}"
        f"{{%- else -%}}{{{{ {q(pieces.head)} }}}}{{%- set rest = messages -%}}{{%- endif -%}}"
        "{%- for message in rest -%}"
        f"{{%- if message['role'] == 'user' -%}}{{{{ message['content'] }}}}{{{{ {q(pieces.after_user)} }}}}"
        f"{{%- elif message['role'] == 'assistant' -%}}{{{{ {q(pieces.answer_prefix)} }}}}{{{{ message['content'] }}}}"
        f"{{{{ {q(pieces.after_answer)} }}}}"
        "{%- endif -%}{%- endfor -%}"
    )


def _go_text(text: str) -> str:
    """Literal text inside a Go template (only `{{` needs care)."""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(pieces: ChatPieces) -> str:
    """Ollama's Go TEMPLATE rendering the same prompt text from .System and .Messages. No `{{-` trim markers:
    they would eat the newlines of the literal text next to them."""
    return (
        f"{{{{ if .System }}}}{_go_text(pieces.head_with_system)}{{{{ .System }}}}{_go_text(pieces.after_system)}"
        f"{{{{ else }}}}{_go_text(pieces.head)}{{{{ end }}}}"
        '{{ range .Messages }}{{ if eq .Role "user" }}'
        f"{{{{ .Content }}}}{_go_text(pieces.after_user)}"
        '{{ else if eq .Role "assistant" }}'
        f"{_go_text(pieces.answer_prefix)}{{{{ .Content }}}}{_go_text(pieces.after_answer)}"
        "{{ end }}{{ end }}"
    )
