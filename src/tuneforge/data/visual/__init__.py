"""How each family of vision-language models shows images to its language model, as a registry.

A family knows, for one image of a given size, the text that replaces its `<image>` placeholder (the
model's image tokens, as many as the vision encoder yields features for that size), the tensors its image
processor makes for a batch of images, and any per-token inputs the model needs besides the ids
(Qwen2-VL's modality types for its 3-D rotary positions). Placeholders are expanded in the conversation
before it is rendered, so templates, answer spans and the token cache work as for text, and images are
read and processed only when a batch is built. One file per family; the folder is discovered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from tuneforge.data.conversation import Conversation, DataError
from tuneforge.data.media import image_size, load_image, scaled_size

if TYPE_CHECKING:
    import torch

    from tuneforge.config.multimodal import MediaArguments

IMAGE = "<image>"
_FAMILIES: dict[str, type[VisionFamily]] = {}


class VisionFamily:
    """One family's image facts, bound to a model's config, tokenizer and image processor."""

    model_types: ClassVar[tuple[str, ...]] = ()
    unused_outputs: ClassVar[tuple[str, ...]] = ()  # image processor outputs the model does not take

    def __init__(self, config: Any, tokenizer: Any, image_processor: Any, args: MediaArguments):
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_pixels = args.image_max_pixels
        self.min_pixels = args.image_min_pixels
        self.image_token_id: int = config.image_token_id
        self.image_token: str = tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.brackets: tuple[int, int] | None = None  # tokens some families put around an image's tokens

    def bracket(self, start_id: int, end_id: int) -> tuple[str, str]:
        """Record the tokens that open and close each image (they are visual: never labels); their text."""
        self.brackets = (start_id, end_id)
        start, end = self.tokenizer.convert_ids_to_tokens([start_id, end_id])
        return start, end

    # What each family defines
    def image_text(self, width: int, height: int) -> str:
        """The text standing for one image of this (already scaled) size in the prompt."""
        raise NotImplementedError

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs the model needs per token besides the ids `[batch, seq]` (none for most families)."""
        return {}

    @property
    def visual_token_ids(self) -> set[int]:
        """Ids that stand for image content (never trained on, never cut through)."""
        return {self.image_token_id, *(self.brackets or ())}

    # Shared behaviour
    def describe(self) -> str:
        """Everything that changes the tokens an image becomes (for the token cache's key)."""
        settings = (
            self.image_processor.to_json_string() if hasattr(self.image_processor, "to_json_string") else ""
        )
        return f"{type(self).__name__}:{self.max_pixels}:{self.min_pixels}:{self.image_token_id}:{settings}"

    def expand(self, conversation: Conversation) -> Conversation:
        """The conversation with each `<image>` replaced by that image's tokens, in order."""
        if not conversation.images:
            return conversation
        texts = iter(
            [self.image_text(*scaled_size(*image_size(p, conversation.source), self.max_pixels, self.min_pixels))
             for p in conversation.images]
        )  # fmt: skip

        def fill(text: str | None) -> str | None:
            if not text or IMAGE not in text:
                return text
            parts = text.split(IMAGE)
            return parts[0] + "".join(next(texts) + part for part in parts[1:])

        messages = [replace(m, content=fill(m.content) or "") for m in conversation.messages]
        return replace(conversation, messages=messages, system=fill(conversation.system))

    def image_count(self, ids: Sequence[int]) -> int:
        return sum(1 for i in ids if i == self.image_token_id)

    def pixel_inputs(self, paths: Sequence[str]) -> dict[str, torch.Tensor]:
        """The image processor's tensors for these images, in order (e.g. `pixel_values`)."""
        images = [load_image(p, self.max_pixels, self.min_pixels) for p in paths]
        made = self.image_processor(images=images, return_tensors="pt")
        return {k: v for k, v in made.items() if k not in self.unused_outputs}


def register_family(cls: type[VisionFamily]) -> type[VisionFamily]:
    for model_type in cls.model_types:
        _FAMILIES[model_type] = cls
    return cls


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def supported_model_types() -> list[str]:
    _discover()
    return sorted(_FAMILIES)


def vision_family(config: Any, tokenizer: Any, image_processor: Any, args: MediaArguments) -> VisionFamily:
    """The family of a vision-language model's config, bound to its tokenizer and image processor."""
    _discover()
    family = _FAMILIES.get(config.model_type)
    if family is None:
        raise DataError(
            f"model type '{config.model_type}' is a vision-language model whose image tokens tuneforge does not know "
            f"yet; supported: {', '.join(supported_model_types())}",
            "multimodal",
        )
    return family(config, tokenizer, image_processor, args)


TEXT_ONLY = (
    "the model is a text-only model; train a vision-language model (e.g. Qwen2-VL, LLaVA) or drop the images column "
    "from dataset_info.json"
)


def refuse_images(conversations: Sequence[Conversation], why: str = TEXT_ONLY) -> None:
    """Rows with images where they cannot be used: a sentence naming how many, the first, and `why`."""
    with_images = [c for c in conversations if c.images]
    if with_images:
        raise DataError(
            f"{len(with_images)} rows have images (first: {with_images[0].source}), and {why}", "multimodal"
        )


class ImageCollator:
    """Wraps a text collator: rows' `images` become the family's pixel tensors for the whole batch, in row
    order, plus its per-token inputs. Rows without images cost nothing extra."""

    def __init__(
        self,
        collator: Callable[[Sequence[dict[str, Any]]], dict[str, Any]],
        family: VisionFamily,
        copies: int = 1,
    ):
        self.collator = collator
        self.family = family
        self.copies = (
            copies  # preference pairs: the batch holds every prompt twice (chosen rows, then rejected)
        )

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        paths = [p for row in rows for p in row.get("images", ())] * self.copies
        batch = self.collator([{k: v for k, v in row.items() if k != "images"} for row in rows])
        if paths:
            batch.update(self.family.pixel_inputs(paths))
            batch.update(self.family.token_inputs(batch["input_ids"]))
        return batch
