"""LLaMA-Factory's named templates (`template: qwen3_nothink`, ...), rendered as LLaMA-Factory renders them.

Each of the 124 names is a row of `templates/catalog.yaml`: the text around a prefix, the system prompt, a
user turn, an answer, a tool call and a tool result. A conversation becomes turns of pieces, each piece a
string tokenized on its own or a special token, exactly as LLaMA-Factory tokenizes its slots, so the token
ids match. Turn k's prompt is everything before answer k (prefix and system included on turn 0) and its
target is answer k's piece.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuneforge.data.conversation import Conversation, DataError, Message
from tuneforge.data.tool_formats import get_tool_format

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CATALOG = Path(__file__).with_name("templates") / "catalog.yaml"
_SPECIAL = re.compile(r"(\{\{bos_token\}\}|\{\{eos_token\}\})")


@dataclass(frozen=True)
class Special:
    """A piece that is one special token: the tokenizer's `bos` or `eos` (after replace_eos)."""

    which: str


Piece = str | Special
Turn = tuple[list[Piece], list[Piece]]
"""(prompt pieces, target pieces) of one answer."""


@dataclass(frozen=True)
class SlotTemplate:
    name: str
    prefix: str
    system: str
    user: str
    assistant: str
    observation: str
    function: str | None = None
    tool_format: str = "default"
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    efficient_eos: bool = False
    replace_eos: bool = False
    kind: str = "base"
    thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")
    enable_thinking: bool | None = True
    preserve_thinking: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def function_slot(self) -> str:
        return self.function if self.function is not None else self.assistant

    @property
    def reasoning(self) -> bool:
        return self.kind in ("reasoning", "glm47_reasoning")

    def configured(
        self, tool_format: str | None, default_system: str | None, enable_thinking: bool | None
    ) -> SlotTemplate:
        """The template with a run's overrides, as LLaMA-Factory applies `tool_format` and `default_system`:
        a tool_format replaces the function slot with a bare `{{content}}` (+ eos unless efficient_eos)."""
        changes: dict[str, Any] = {"enable_thinking": enable_thinking}
        if tool_format:
            get_tool_format(tool_format)  # fail early on an unknown name
            bare = "{{content}}" if self.efficient_eos else "{{content}}{{eos_token}}"
            changes.update(tool_format=tool_format, function=bare)
        if default_system:
            changes["default_system"] = default_system
        return replace(self, **changes)

    def fingerprint(self) -> str:
        """A stable text naming everything that shapes the tokens (for the tokenized-data cache key)."""
        fields = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return "slots:" + json.dumps(fields, sort_keys=True, default=str)

    # ----- rendering -----

    def _fill(self, slot: str, content: str = "", idx: int = 0) -> list[Piece]:
        """A slot's pieces: its text split at special tokens, `{{content}}` filled once (LLaMA-Factory's rule)."""
        pieces: list[Piece] = []
        filled = False
        for part in _SPECIAL.split(slot):
            if part == "{{bos_token}}":
                pieces.append(Special("bos"))
            elif part == "{{eos_token}}":
                pieces.append(Special("eos"))
            elif part:
                if not filled and "{{content}}" in part:
                    part = part.replace("{{content}}", content, 1)
                    filled = True
                pieces.append(part.replace("{{idx}}", str(idx), 1))
        return pieces

    def _thought(self) -> str:
        if self.kind == "glm47_reasoning":
            return self.thought_words[1]
        return self.thought_words[0] + self.thought_words[1]

    def _has_thought(self, content: str) -> bool:
        return self.thought_words[0].strip() in content or self.thought_words[1].strip() in content

    def _without_thought(self, content: str) -> str:
        first, last = (re.escape(w) for w in self.thought_words)
        return re.sub(f"{first}(.*?){last}", "", content, flags=re.DOTALL).lstrip("\n")

    def _call_pieces(self, message: Message) -> list[Piece]:
        return self._fill(
            self.function_slot, message.content + self._call_pieces_text(message.tool_calls or ())
        )

    def _call_pieces_text(self, tool_calls: Any) -> str:
        """The tool format's text of calls (OpenAI's `{"type": "function", "function": ...}` or bare)."""
        return get_tool_format(self.tool_format).calls_text([_call_of(call) for call in tool_calls])

    def _tools_text(self, tools: str | None) -> str:
        if not tools:
            return ""
        if "tools" in self.extra:  # a template that writes the row's tools JSON as it is (phi4_mini)
            return self.extra["tools"].replace("{{content}}", tools, 1)
        definitions = json.loads(tools)
        return get_tool_format(self.tool_format).tools_text(definitions) if definitions else ""

    def turns(self, conversation: Conversation, last_only_thought: bool = False) -> list[Turn]:
        """The conversation as (prompt, target) pieces per answer. `last_only_thought`: history answers lose
        their thoughts and only the last answer gets an empty one (LLaMA-Factory with mask_history, and for
        preference rows)."""
        messages = list(conversation.messages)
        if self.reasoning:
            messages = self._thoughts_kept(messages, last_only_thought)
        system = conversation.system or self.default_system
        tool_text = self._tools_text(conversation.tools)
        if self.kind == "mossvl" and tool_text and not system:
            tool_text = tool_text.lstrip("\n")
        out: list[Turn] = []
        prompt: list[Piece] = []
        for i, message in enumerate(messages):
            content = message.content
            if i == 0:
                prompt += self._fill(self.prefix)
                if system or tool_text:
                    system_pieces = self._fill(self.system, system + tool_text)
                    if self.kind == "llama2":  # the system text goes inside the first user turn
                        content = "".join(p for p in system_pieces if isinstance(p, str)) + content
                    else:
                        prompt += system_pieces
            if message.role == "user":
                prompt += self._fill(self.user, content, i // 2)
            elif message.role == "tool":
                prompt += self._fill(self.observation, content)
            else:
                target = (
                    self._call_pieces(message) if message.tool_calls else self._fill(self.assistant, content)
                )
                out.append((prompt, target))
                prompt = []
        if self.reasoning:
            self._add_empty_thoughts(out, messages, last_only_thought)
        return out

    def prompt_pieces(self, conversation: Conversation) -> list[Piece]:
        """The pieces before the next answer of a conversation that ends with a prompt-side turn."""
        padded = replace(conversation, messages=[*conversation.messages, Message("assistant", "")])
        turns = self.turns(padded, last_only_thought=True)
        # with thinking off, the empty thought closes the last prompt and the model answers without thinking
        return [p for prompt, target in turns[:-1] for p in [*prompt, *target]] + turns[-1][0]

    def _thoughts_kept(self, messages: list[Message], last_only: bool) -> list[Message]:
        answers = [i for i, m in enumerate(messages) if m.role == "assistant"]
        drop = set(answers) if self.enable_thinking is False else set()
        if last_only and not self.preserve_thinking:
            drop |= set(answers[:-1])
        return [
            replace(m, content=self._without_thought(m.content)) if i in drop else m
            for i, m in enumerate(messages)
        ]

    def _add_empty_thoughts(self, turns: list[Turn], messages: list[Message], last_only: bool) -> None:
        answers = [m for m in messages if m.role == "assistant"]
        indices = [len(turns) - 1] if last_only else range(len(turns))
        for k in indices:
            if self._has_thought(answers[k].content):
                continue
            if self.enable_thinking:
                turns[k][1].insert(0, self._thought())  # the model learns to think (emptily) first
            else:
                turns[k][0].append(self._thought())  # thinking off: the empty thought is part of the prompt

    def render_text(self, conversation: Conversation, tokenizer: PreTrainedTokenizerBase) -> str:
        """The whole conversation as text (special tokens written out), for previews and comparisons."""
        specials = special_strings(self, tokenizer)
        pieces = [p for prompt, target in self.turns(conversation) for p in [*prompt, *target]]
        if self.efficient_eos:
            pieces.append(Special("eos"))
        return "".join(specials.get(p.which, "") if isinstance(p, Special) else p for p in pieces)


def _call_of(call: dict[str, Any]) -> tuple[str, Any]:
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # OpenAI sends arguments as a JSON string
            arguments = json.loads(arguments)
    return function["name"], arguments


def special_strings(template: SlotTemplate, tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The text of `bos` and `eos` for this template: eos is the first stop word where the template
    replaces it (LLaMA-Factory's replace_eos), and `<|endoftext|>` for a tokenizer without one."""
    eos = template.stop_words[0] if template.replace_eos and template.stop_words else tokenizer.eos_token
    return {"bos": tokenizer.bos_token or "", "eos": eos or "<|endoftext|>"}


def special_ids(template: SlotTemplate, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Token ids of `bos` and `eos` (empty when the tokenizer has no such token). An eos the vocabulary lacks
    (a template's stop word on a tokenizer of another family) is tokenized as text."""
    out: dict[str, list[int]] = {}
    for which, text in special_strings(template, tokenizer).items():
        if not text:
            out[which] = []
            continue
        token_id = tokenizer.convert_tokens_to_ids(text)
        unknown = token_id is None or (token_id == tokenizer.unk_token_id and text != tokenizer.unk_token)
        out[which] = tokenizer.encode(text, add_special_tokens=False) if unknown else [token_id]
    return out


@cache
def _catalog() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(CATALOG.read_text(encoding="utf-8"))


def catalog_names() -> list[str]:
    return list(_catalog())


FIELDS = {"prefix", "system", "user", "assistant", "observation", "function", "tool_format", "default_system",
          "efficient_eos", "replace_eos", "kind"}  # fmt: skip


def slot_template(name: str) -> SlotTemplate:
    """The catalog's template `name`; DataError naming the closest names otherwise."""
    entry = _catalog().get(name)
    if entry is None:
        import difflib

        close = difflib.get_close_matches(name, list(_catalog()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataError(f"template '{name}' is unknown{hint} (`tuneforge templates` lists all)", "template")
    values = {k: v for k, v in entry.items() if k in FIELDS}
    return SlotTemplate(
        name=name,
        stop_words=tuple(entry.get("stop_words", ())),
        thought_words=tuple(entry.get("thought_words", ("<think>\n", "\n</think>\n\n"))),
        extra={k: v for k, v in entry.items() if k not in FIELDS},
        **values,
    )
