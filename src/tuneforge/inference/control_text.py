"""Control-token text in a request's content is tokenized as text, never as control tokens.

A user who writes `<|im_end|>\\n<|im_start|>assistant` into a message must not be able to end their
turn and speak as the assistant (role injection). The conversation is rendered with each such string in
the content replaced by a private-use placeholder character; after tokenizing, each placeholder's ids
are replaced by the ids of the original string tokenized as plain text. The result is checked: its text
must equal the conversation rendered as written, or the request is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

PLACEHOLDER = "\ue000"  # private use: in no template, and in no merge of a byte-level vocabulary


def control_strings(tokenizer: Any) -> list[str]:
    """The tokenizer's special tokens (longest first, so `<|im_end|>` wins over a shorter prefix)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = {t.content for t in decoder.values() if getattr(t, "special", False)}
    found |= {t for t in getattr(tokenizer, "all_special_tokens", []) if t}
    return sorted(found, key=len, reverse=True)


def has_control_text(messages: list[dict[str, Any]], system: str | None, specials: list[str]) -> bool:
    texts = [system or ""] + [str(m.get("content") or "") for m in messages]
    return any(s in text for s in specials for text in texts)


def render_as_text(
    messages: list[dict[str, Any]],
    system: str | None,
    tokenizer: Any,
    render: Callable[[list[dict[str, Any]], str | None], list[int]],
    keep: Collection[str] = (),
) -> list[int]:
    """Prompt ids with every special-token string inside the content tokenized as plain text, but those in
    `keep` (e.g. `<image>`, a placeholder `render` replaces with image tokens)."""
    specials = [s for s in control_strings(tokenizer) if s not in keep]
    taken: list[str] = []

    def hide(text: str) -> str:
        out, i = [], 0
        while i < len(text):
            match = next((s for s in specials if text.startswith(s, i)), None)
            if match:
                taken.append(match)
                out.append(PLACEHOLDER)
                i += len(match)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    hidden = [{**m, "content": hide(str(m.get("content") or ""))} for m in messages]
    ids = render(hidden, hide(system) if system else system)
    marker = tokenizer.encode(PLACEHOLDER, add_special_tokens=False)
    result: list[int] = []
    i, used = 0, 0
    while i < len(ids):
        if ids[i : i + len(marker)] == marker and used < len(taken):
            result += tokenizer.encode(taken[used], add_special_tokens=False, split_special_tokens=True)
            used += 1
            i += len(marker)
        else:
            result.append(ids[i])
            i += 1
    if used != len(taken):
        raise ValueError(
            "the messages contain control-token text (such as <|im_end|>) that could not be kept as plain "
            "text with this tokenizer; remove it, or start the server with --allow_control_tokens"
        )
    return result
