"""Render conversations with a chat template into token ids and labels that train only on assistant tokens.

The template is the tokenizer's own `chat_template` unless `template:` names a built-in one
(a Jinja file in `templates/`). Assistant spans are found on the rendered text: an answer
starts where the generation prompt ends and stops at the end of its turn (end-of-turn token
included, trailing whitespace not). Chat renders the prompt with the same function, so
inference sees exactly what training saw.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Union

from jinja2.runtime import new_context

from tuneforge.data.conversation import Conversation, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tuneforge.data.slots import SlotTemplate


ChatTemplate = Union[str, "SlotTemplate"]
"""A Jinja chat template (the tokenizer's own) or one of LLaMA-Factory's named templates."""


def builtin_templates() -> list[str]:
    """Every template name `template:` takes: LLaMA-Factory's 124."""
    from tuneforge.data.slots import catalog_names

    return catalog_names()


def chat_template_for(
    tokenizer: PreTrainedTokenizerBase,
    template: str | None,
    tool_format: str | None = None,
    default_system: str | None = None,
    enable_thinking: bool | None = True,
) -> ChatTemplate:
    """The template to use: a LLaMA-Factory name renders as LLaMA-Factory renders it; none means the
    tokenizer's own chat_template."""
    if template:
        from tuneforge.data.slots import slot_template

        try:
            return slot_template(template).configured(tool_format, default_system, enable_thinking)
        except ValueError as err:  # an unknown tool_format
            raise DataError(str(err), "template") from None
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the tokenizer has no chat_template; set `template:` to a LLaMA-Factory template name "
            "(e.g. chatml, llama3, qwen, alpaca; `tuneforge templates` lists all 124)",
            "template",
        )
    return tokenizer.chat_template


def template_fingerprint(template: ChatTemplate) -> str:
    """Text that changes whenever the template would render differently (for cache keys)."""
    return template if isinstance(template, str) else template.fingerprint()


def template_stop_ids(template: ChatTemplate, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids that end an answer besides the tokenizer's EOS: a named template's eos and stop words (those the
    vocabulary has as single tokens), as LLaMA-Factory stops generation on them."""
    if isinstance(template, str):
        return set()
    from tuneforge.data.slots import special_strings

    ids = set()
    for word in (special_strings(template, tokenizer)["eos"], *template.stop_words):
        token_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


def template_options(args: Any) -> dict[str, Any]:
    """The keys of DataArguments (and GeneratingArguments' default_system) that configure a template."""
    return {
        "tool_format": getattr(args, "tool_format", None),
        "default_system": getattr(args, "default_system", None),
        "enable_thinking": getattr(args, "enable_thinking", True),
    }


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
    ours = prompt_text(PROBE, tokenizer, chat_template_for(tokenizer, template))
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
    tools: list[Any] | None = None,
    options: dict[str, Any] | None = None,
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
            "tools": tools,
            "documents": None,
            "add_generation_prompt": gen,
            **(options or {}),
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
    enable_thinking: bool | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of every assistant answer in it.

    An answer starts where the text rendered up to its generation prompt ends, and stops where the text
    rendered up to and including it ends (trailing whitespace excluded), so its end-of-turn token is inside.
    """
    chat = conversation.as_chat()
    offset = 1 if conversation.system else 0
    specials = tokenizer.special_tokens_map if specials is None else specials
    tools = json.loads(conversation.tools) if conversation.tools else None
    # templates that read `enable_thinking` (Qwen3's own, ...) get the run's value, as apply_chat_template passes it
    options = {"enable_thinking": enable_thinking} if enable_thinking is not None else None
    text = _render(tokenizer, chat, template, False, specials, tools, options)
    spans = []
    last = len(conversation.messages) - 1
    for i, message in enumerate(conversation.messages):
        if message.role != "assistant":
            continue
        upto = offset + i
        prompt = _render(tokenizer, chat[:upto], template, True, specials, tools, options)
        turn = (
            text
            if i == last
            else _render(tokenizer, chat[: upto + 1], template, False, specials, tools, options)
        )
        if not (text.startswith(prompt) and text.startswith(turn) and turn.startswith(prompt)):
            raise DataError(
                f"{conversation.source}: the chat template renders earlier turns differently once later turns "
                "are added, so answer tokens cannot be located; choose a built-in `template:` instead",
                "template",
            )
        spans.append((len(prompt), len(turn.rstrip())))
    return text, spans


def _as_conversation(messages: list[dict[str, Any]], system: str | None) -> Conversation:
    from tuneforge.data.conversation import Message

    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    return Conversation(
        [
            Message(m["role"], m["content"], tuple(m["tool_calls"]) if m.get("tool_calls") else None)
            for m in messages
        ],
        system=system,
    )


def render_prompt(
    messages: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    system: str | None = None,
    tools: str | None = None,
) -> list[int]:
    """Token ids of a chat ready for the next assistant answer, rendered as in training."""
    if not isinstance(template, str):
        from tuneforge.data.slot_encode import prompt_ids

        conversation = _as_conversation(messages, system)
        conversation.tools = tools
        return prompt_ids(template.prompt_pieces(conversation), tokenizer, template)
    chat = list(messages)
    if system and not (chat and chat[0]["role"] == "system"):
        chat = [{"role": "system", "content": system}, *chat]
    text = _render(tokenizer, chat, template, True, tools=json.loads(tools) if tools else None)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_text(
    messages: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, template: ChatTemplate
) -> str:
    """The text of a chat ready for the next answer (special tokens written out), for comparisons."""
    if isinstance(template, str):
        return _render(tokenizer, messages, template, gen=True)
    from tuneforge.data.slots import Special, special_strings

    names = special_strings(template, tokenizer)
    pieces = template.prompt_pieces(_as_conversation(messages, None))
    return "".join(names[p.which] if isinstance(p, Special) else p for p in pieces)
