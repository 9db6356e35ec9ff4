"""Requests with images for a vision-language model: `<image>` placeholders become the image's tokens in the
prompt (as in training), and the image files become the tensors its forward pass takes besides the ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.data.conversation import Conversation, Message
from tuneforge.data.visual import IMAGE, VisionFamily

__all__ = ["IMAGE", "image_inputs", "with_image_tokens"]


def with_image_tokens(
    family: VisionFamily | None, model_name: str, messages: list[dict[str, Any]], images: Sequence[str]
) -> list[dict[str, Any]]:
    """`messages` with each `<image>` replaced by the next image's tokens; a sentence (ValueError) when the
    model reads no images or the counts differ."""
    if family is None:
        raise ValueError(f"{model_name} is a text-only model; it cannot read images")
    placed = sum(str(m.get("content") or "").count(IMAGE) for m in messages)
    if placed != len(images):
        raise ValueError(f"the messages hold {placed} {IMAGE} placeholder(s) for {len(images)} image(s)")
    turns = [Message(m["role"], str(m.get("content") or "")) for m in messages]
    expanded = family.expand(Conversation(turns, images=tuple(images), source="the request"))
    return [{**m, "content": t.content} for m, t in zip(messages, expanded.messages, strict=True)]


def image_inputs(
    family: VisionFamily, prompt_ids: list[int], images: Sequence[str], device: Any
) -> dict[str, Any]:
    """The image tensors of a request on `device`, checked against the image tokens its prompt holds."""
    import torch

    if family.image_count(prompt_ids) and not images:
        raise ValueError("the prompt holds image tokens but no image was given")
    if not images:
        return {}
    inputs = family.pixel_inputs(images)
    inputs.update(family.token_inputs(torch.tensor([prompt_ids])))
    return {k: v.to(device) for k, v in inputs.items()}
