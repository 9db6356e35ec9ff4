"""Requests with images (videos, audio) for a multimodal model: `<image>`, `<video>` and `<audio>` placeholders
become the medium's tokens in the prompt (as in training), and the files (media references,
`tuneforge.data.media`) become the tensors its forward pass takes besides the ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.data.conversation import Conversation, DataError, Message
from tuneforge.data.media import kind_of
from tuneforge.data.visual import IMAGE, PLACEHOLDERS, VisionFamily

__all__ = ["IMAGE", "PLACEHOLDERS", "image_inputs", "placed", "with_image_tokens"]


def with_image_tokens(
    family: VisionFamily | None, model_name: str, messages: list[dict[str, Any]], images: Sequence[str]
) -> list[dict[str, Any]]:
    """`messages` with each `<image>` (`<video>`, `<audio>`) replaced by the next such medium's tokens; a
    sentence (ValueError) when the model reads no such media or the counts differ."""
    kinds = sorted(
        {kind_of(ref) for ref in images} | {k for k, p in PLACEHOLDERS.items() if placed(messages, p)}
    )
    if family is None and kinds:
        raise ValueError(f"{model_name} is a text-only model; it cannot read {kinds[0]}s")
    for kind in kinds:
        count, given = placed(messages, PLACEHOLDERS[kind]), sum(1 for r in images if kind_of(r) == kind)
        if count != given:
            raise ValueError(
                f"the messages hold {count} {PLACEHOLDERS[kind]} placeholder(s) for {given} {kind}(s)"
            )
    turns = [Message(m["role"], str(m.get("content") or "")) for m in messages]
    try:
        expanded = family.expand(Conversation(turns, images=tuple(images), source="the request"))
    except DataError as err:
        raise ValueError(str(err)) from None
    return [{**m, "content": t.content} for m, t in zip(messages, expanded.messages, strict=True)]


def placed(messages: list[dict[str, Any]], placeholder: str) -> int:
    """How many times the messages hold this placeholder."""
    return sum(str(m.get("content") or "").count(placeholder) for m in messages)


def image_inputs(
    family: VisionFamily, prompt_ids: list[int], images: Sequence[str], device: Any
) -> dict[str, Any]:
    """The media tensors of a request on `device`, checked against the media tokens its prompt holds."""
    import torch

    if family.image_count(prompt_ids) and not images:
        raise ValueError(
            "the prompt holds image tokens but no image was given (or video, audio tokens without the file)"
        )
    if not images:
        return {}
    inputs = family.pixel_inputs(images)
    inputs.update(family.token_inputs(torch.tensor([prompt_ids])))
    return {k: v.to(device) for k, v in inputs.items()}
