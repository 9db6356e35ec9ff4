"""Dataset formats as a registry: each turns one raw row into a `Conversation` (or a pretraining `Document`).

Column and tag names follow LLaMA-Factory's dataset_info.json, so existing files work unchanged.
Preference rows (`ranking: true`) carry `chosen`/`rejected`; KTO rows a `kto_tag` column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tuneforge.data.conversation import Conversation, DataError, Document, Example, Message
from tuneforge.data.media import PLACEHOLDERS, media_refs
from tuneforge.utils.env import env_flag

Row = dict[str, Any]
Converter = Callable[[Row, "DatasetSpec", str], Example]
_FORMATS: dict[str, Converter] = {}

DEFAULT_COLUMNS: dict[str, dict[str, str | None]] = {
    "alpaca": {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "system": None,
        "history": None,
    },
    "sharegpt": {"messages": "conversations", "system": None, "tools": None},
    "openai": {"messages": "messages", "system": None, "tools": "tools"},
}
DEFAULT_TAGS = {
    "sharegpt": {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "system_tag": "system",
        "observation_tag": "observation",
        "function_tag": "function_call",
    },
    "openai": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
        "observation_tag": "tool",
        "function_tag": "function_call",
    },
}
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


class DatasetSpec:
    """One entry of dataset_info.json, with LLaMA-Factory's defaults filled in."""

    def __init__(self, name: str, entry: dict[str, Any]):
        if not isinstance(entry, dict):
            raise DataError(
                f"dataset '{name}': its dataset_info.json entry should be an object", "dataset_info"
            )
        self.name = name
        self.file_name: str | list[str] | None = entry.get("file_name")
        _check_entry_types(name, entry)
        self.hub = _hub_source(name, entry)
        self.subset: str | None = entry.get("subset")
        self.split: str = entry.get("split", "train")
        self.folder: str | None = entry.get("folder")
        self.revision: str | None = entry.get("revision")
        if not self.file_name and not self.hub:
            raise DataError(
                f"dataset '{name}' has neither file_name nor hf_hub_url/ms_hub_url in dataset_info.json",
                "dataset_info",
            )
        self.formatting: str = entry.get("formatting", "alpaca")
        if self.formatting not in _FORMATS:
            raise DataError(
                f"dataset '{name}': formatting '{self.formatting}' is unknown; use one of {', '.join(sorted(_FORMATS))}",
                "dataset_info",
            )
        self.ranking: bool = bool(entry.get("ranking", False))
        self.num_samples: int | None = entry.get("num_samples")
        given = entry.get("columns") or {}
        # LLaMA-Factory's pretraining convention: a prompt column and no response column means plain text.
        self.is_text = (
            self.formatting == "alpaca" and "prompt" in given and "response" not in given and not self.ranking
        )
        self.columns = {**DEFAULT_COLUMNS[self.formatting], **given}
        self.tags = {**DEFAULT_TAGS.get(self.formatting, {}), **(entry.get("tags") or {})}
        self.media_dir: str = (
            "."  # where relative image paths start: set to media_dir or dataset_dir by the loader
        )

    def convert(self, row: Row, source: str) -> Example:
        if not isinstance(row, dict):
            raise DataError(
                f"{source}: expected a JSON object per row, got {type(row).__name__}", "wrong_type"
            )
        if self.is_text:
            example: Example = Document(
                _text(row, self.columns["prompt"], source, required=True) or "", source
            )
        else:
            example = _FORMATS[self.formatting](row, self, source)
            kto = self.columns.get("kto_tag")
            if kto:
                example.kto_label = _flag(row, kto, source)
        example.validate()
        if isinstance(example, Conversation):
            _attach_media(example, row, self, source)
        return example


def _attach_media(conversation: Conversation, row: Row, spec: DatasetSpec, source: str) -> None:
    """The row's image, video and audio files, checked against its `<image>`, `<video>` and `<audio>`
    placeholders: one file (or, for a video, one file or list of frames) per placeholder."""
    refs = media_refs(row, spec.columns, spec.media_dir, source)
    conversation.images = tuple(ref for kind in PLACEHOLDERS for ref in refs[kind])
    turns = [*conversation.messages, *([conversation.rejected] if conversation.rejected else [])]
    for kind, placeholder in PLACEHOLDERS.items():
        placed = sum(m.content.count(placeholder) for m in turns) + (conversation.system or "").count(
            placeholder
        )
        if placed != len(refs[kind]):
            column = spec.columns.get(f"{kind}s")
            where = f"column '{column}'" if column else f"no {kind}s column in dataset_info.json"
            raise DataError(
                f"{source}: the messages hold {placed} {placeholder} placeholder(s) but {len(refs[kind])} {kind}(s) "
                f"are given ({where}); each {kind} needs exactly one {placeholder} where it belongs in the prompt",
                "multimodal",
            )
        for i, message in enumerate(conversation.messages):
            if message.role == "assistant" and placeholder in message.content:
                raise DataError(
                    f"{source}: turn {i + 1} (assistant) contains {placeholder}; {kind}s belong in prompt turns",
                    "multimodal",
                )


def _check_entry_types(name: str, entry: dict[str, Any]) -> None:
    """The shapes LLaMA-Factory's schema gives each field, checked before they are used."""
    where = f"dataset '{name}' in dataset_info.json"
    names = entry.get("file_name")
    if names is not None and not (
        isinstance(names, str)
        or (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names))
    ):
        raise DataError(
            f"{where}: file_name should be a file name or a list of them, got {names!r}", "dataset_info"
        )
    for key in ("columns", "tags"):
        value = entry.get(key)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise DataError(
                f'{where}: {key} should map names to column names, like {{"prompt": "instruction"}}; got {value!r}',
                "dataset_info",
            )
    for key in ("hf_hub_url", "ms_hub_url", "subset", "split", "folder", "revision", "formatting"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise DataError(f"{where}: {key} should be text, got {entry[key]!r}", "dataset_info")
    samples = entry.get("num_samples")
    if samples is not None and (type(samples) is not int or samples < 1):
        raise DataError(
            f"{where}: num_samples should be a positive whole number, got {samples!r}", "dataset_info"
        )


def _hub_source(name: str, entry: dict[str, Any]) -> tuple[str, str] | None:
    """("hf_hub_url" or "ms_hub_url", repo id) as LLaMA-Factory picks it: ModelScope with
    USE_MODELSCOPE_HUB=1 when the entry has an ms_hub_url, else the Hugging Face id, else ModelScope's."""
    if entry.get("ms_hub_url") and (env_flag("USE_MODELSCOPE_HUB") or not entry.get("hf_hub_url")):
        return "ms_hub_url", entry["ms_hub_url"]
    if entry.get("hf_hub_url"):
        return "hf_hub_url", entry["hf_hub_url"]
    other = next((k for k in ("om_hub_url", "script_url", "cloud_file_name") if entry.get(k)), None)
    if other and not entry.get("file_name"):
        raise DataError(
            f"dataset '{name}' comes from {other}, which tuneforge does not read; download the files and set "
            "file_name to them",
            "dataset_info",
        )
    return None


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
            raise DataError(f"{source}: field '{column}' is missing or null", "missing_field")
        return None
    if not isinstance(value, str):
        raise DataError(
            f"{source}: field '{column}' should be text, got {type(value).__name__}", "wrong_type"
        )
    return value


def _flag(row: Row, column: str, source: str) -> bool:
    value = row.get(column)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise DataError(f"{source}: field '{column}' should be true or false, got {value!r}", "wrong_type")


def _tools(row: Row, column: str | None, source: str) -> str | None:
    if not column or row.get(column) in (None, "", []):
        return None
    value = row[column]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@register_format("alpaca")
def from_alpaca(row: Row, spec: DatasetSpec, source: str) -> Conversation:
    cols = spec.columns
    messages: list[Message] = []
    history = row.get(cols["history"]) if cols.get("history") else None
    if history is not None and not isinstance(history, list):
        raise DataError(
            f"{source}: field '{cols['history']}' should be a list of [question, answer] pairs", "wrong_type"
        )
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(
                f"{source}: field '{cols['history']}' item {i + 1} should be a [question, answer] pair",
                "wrong_type",
            )
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    prompt = _text(row, cols["prompt"], source, required=True) or ""
    query = _text(row, cols.get("query"), source, required=False)
    if query:
        prompt = f"{prompt}\n{query}" if prompt else query
    if not prompt.strip():
        raise DataError(f"{source}: field '{cols['prompt']}' is empty", "empty")
    messages.append(Message("user", prompt))
    rejected = None
    if spec.ranking:
        messages.append(Message("assistant", _text(row, cols.get("chosen", "chosen"), source, True) or ""))
        rejected = Message("assistant", _text(row, cols.get("rejected", "rejected"), source, True) or "")
    else:
        messages.append(Message("assistant", _text(row, cols["response"], source, required=True) or ""))
    system = _text(row, cols.get("system"), source, False)
    return Conversation(messages, system=system, source=source, rejected=rejected)


def _turn(turn: Any, spec: DatasetSpec, where: str, allow_system: bool) -> Message:
    """One sharegpt/openai turn object to a `Message`."""
    tags = spec.tags
    roles = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["system_tag"]: "system",
        tags["observation_tag"]: "tool",
        tags["function_tag"]: "assistant",
    }
    if not isinstance(turn, dict):
        raise DataError(
            f"{where} should be an object with '{tags['role_tag']}' and '{tags['content_tag']}'", "wrong_type"
        )
    raw_role = turn.get(tags["role_tag"])
    role = roles.get(raw_role)
    if role is None or (role == "system" and not allow_system):
        known = ", ".join(repr(r) for r in roles if allow_system or roles[r] != "system")
        raise DataError(
            f"{where} has role {raw_role!r}; expected one of {known} (set 'tags' in dataset_info.json for other names)",
            "unknown_role",
        )
    content = turn.get(tags["content_tag"])
    tool_calls = turn.get("tool_calls")
    if content is None and tool_calls:
        content = ""
    if not isinstance(content, str):
        if content is None:
            raise DataError(f"{where}: '{tags['content_tag']}' is missing or null", "missing_field")
        raise DataError(
            f"{where}: '{tags['content_tag']}' should be text, got {type(content).__name__}", "wrong_type"
        )
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise DataError(f"{where}: 'tool_calls' should be a list", "wrong_type")
    if raw_role == tags["function_tag"] and not tool_calls:
        content, tool_calls = function_call(content, where)
    return Message(role, content, tuple(tool_calls) if tool_calls else None)


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_THOUGHT_BLOCK = re.compile(r"<think>\n(.*?)\n</think>\n\n", re.DOTALL)


def function_call(content: str, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A `function_call` turn's text as (text kept before the calls, calls in OpenAI's shape), read as
    LLaMA-Factory reads it: JSON `{"name", "arguments"}` or a list of them, optionally inside the first
    <tool_call>...</tool_call> block or after a <think> block, which are kept in front."""
    block = _TOOL_CALL_BLOCK.search(content)
    if block:
        kept, payload = content.replace(block.group(0), "", 1), block.group(1)
    else:
        thought = _THOUGHT_BLOCK.search(content)
        kept = thought.group(0) if thought else ""
        payload = content.replace(kept, "", 1) if thought else content
    try:
        value = json.loads(payload)
    except ValueError:
        raise DataError(
            f'{where}: a function_call turn should be JSON like {{"name": ..., "arguments": {{...}}}} '
            f"(or a list of them); got {payload[:60]!r}",
            "wrong_type",
        ) from None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(isinstance(c, dict) and "name" in c and "arguments" in c for c in calls):
        raise DataError(f"{where}: each function call needs 'name' and 'arguments'", "missing_field")
    shaped = [
        {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls
    ]
    return kept, shaped


@register_format("sharegpt")
def from_sharegpt(row: Row, spec: DatasetSpec, source: str) -> Conversation:
    cols = spec.columns
    turns = row.get(cols["messages"])
    if turns is None:
        raise DataError(f"{source}: field '{cols['messages']}' is missing or null", "missing_field")
    if not isinstance(turns, list):
        raise DataError(f"{source}: field '{cols['messages']}' should be a list of turns", "wrong_type")
    system = _text(row, cols.get("system"), source, required=False)
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        message = _turn(turn, spec, f"{source}: turn {i + 1}", allow_system=True)
        if message.role == "system":
            if i != 0:
                raise DataError(
                    f"{source}: turn {i + 1}: a system message may only come first", "system_position"
                )
            system = message.content
            continue
        messages.append(message)
    rejected = None
    if spec.ranking:
        chosen = _turn(
            row.get(cols.get("chosen", "chosen")), spec, f"{source}: field 'chosen'", allow_system=False
        )
        rejected = _turn(
            row.get(cols.get("rejected", "rejected")), spec, f"{source}: field 'rejected'", False
        )
        messages.append(chosen)
    return Conversation(
        messages,
        system=system,
        source=source,
        tools=_tools(row, cols.get("tools"), source),
        rejected=rejected,
    )


register_format("openai")(from_sharegpt)
