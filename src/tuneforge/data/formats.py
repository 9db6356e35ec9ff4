"""Dataset formats as a registry: each turns one raw row into a `Conversation`.

Column and tag names follow LLaMA-Factory's dataset_info.json, so existing files work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneforge.data.conversation import Conversation, DataError, Message

Row = dict[str, Any]
Converter = Callable[[Row, "DatasetSpec", str], Conversation]
_FORMATS: dict[str, Converter] = {}

DEFAULT_COLUMNS = {
    "alpaca": {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "system": None,
        "history": None,
    },
    "sharegpt": {"messages": "conversations", "system": None, "tools": None},
}
DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
    "observation_tag": "observation",
    "function_tag": "function_call",
}


class DatasetSpec:
    """One entry of dataset_info.json, with LLaMA-Factory's defaults filled in."""

    def __init__(self, name: str, entry: dict[str, Any]):
        self.name = name
        self.file_name: str | None = entry.get("file_name")
        self.formatting: str = entry.get("formatting", "alpaca")
        self.ranking: bool = bool(entry.get("ranking", False))
        if self.formatting not in _FORMATS:
            raise DataError(
                f"dataset '{name}': formatting '{self.formatting}' is unknown; use one of {', '.join(sorted(_FORMATS))}"
            )
        self.columns = {**DEFAULT_COLUMNS.get(self.formatting, {}), **(entry.get("columns") or {})}
        self.tags = {**DEFAULT_TAGS, **(entry.get("tags") or {})}

    def convert(self, row: Row, source: str) -> Conversation:
        if not isinstance(row, dict):
            raise DataError(f"{source}: expected a JSON object per row, got {type(row).__name__}")
        conversation = _FORMATS[self.formatting](row, self, source)
        conversation.validate()
        return conversation


def register_format(name: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        _FORMATS[name] = fn
        return fn

    return wrap


def _text(row: Row, column: str | None, source: str, required: bool) -> str | None:
    if not column:
        return None
    value = row.get(column)
    if value is None:
        if required:
            raise DataError(f"{source}: field '{column}' is missing or null")
        return None
    if not isinstance(value, str):
        raise DataError(f"{source}: field '{column}' should be text, got {type(value).__name__}")
    return value


@register_format("alpaca")
def from_alpaca(row: Row, spec: DatasetSpec, source: str) -> Conversation:
    cols = spec.columns
    messages: list[Message] = []
    history = row.get(cols["history"]) if cols.get("history") else None
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(
                f"{source}: field '{cols['history']}' item {i} should be a [question, answer] pair"
            )
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    prompt = _text(row, cols["prompt"], source, required=True) or ""
    query = _text(row, cols.get("query"), source, required=False)
    if query:
        prompt = f"{prompt}\n{query}" if prompt else query
    if not prompt.strip():
        raise DataError(f"{source}: field '{cols['prompt']}' is empty")
    response = _text(row, cols["response"], source, required=True)
    messages += [Message("user", prompt), Message("assistant", response or "")]
    return Conversation(messages, system=_text(row, cols.get("system"), source, False), source=source)


@register_format("sharegpt")
def from_sharegpt(row: Row, spec: DatasetSpec, source: str) -> Conversation:
    cols, tags = spec.columns, spec.tags
    turns = row.get(cols["messages"])
    if not isinstance(turns, list):
        raise DataError(f"{source}: field '{cols['messages']}' should be a list of turns")
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}
    system = _text(row, cols.get("system"), source, required=False)
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        where = f"{source}: turn {i + 1}"
        if not isinstance(turn, dict):
            raise DataError(
                f"{where} should be an object with '{tags['role_tag']}' and '{tags['content_tag']}'"
            )
        role = roles.get(turn.get(tags["role_tag"]))
        if role is None:
            raise DataError(
                f"{where} has role {turn.get(tags['role_tag'])!r}; expected one of {', '.join(map(repr, roles))} "
                "(set 'tags' in dataset_info.json for other names)"
            )
        content = turn.get(tags["content_tag"])
        if not isinstance(content, str):
            raise DataError(f"{where}: '{tags['content_tag']}' should be text, got {type(content).__name__}")
        if role == "system":
            if i != 0:
                raise DataError(f"{where}: a system message may only come first")
            system = content
            continue
        messages.append(Message(role, content))
    return Conversation(messages, system=system, source=source)
