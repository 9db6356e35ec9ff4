"""How each family of multimodal models shows images, videos and audio to its language model, as a registry.

A family knows, for one image of a given size, the text that replaces its `<image>` placeholder (the
model's image tokens, as many as the vision encoder yields features for that size), the tensors its image
processor makes for a batch of images, and any per-token inputs the model needs besides the ids
(Qwen2-VL's modality types for its 3-D rotary positions); families that read videos or audio know the same
for `<video>` and `<audio>`. Placeholders are expanded in the conversation before it is rendered, so
templates, answer spans and the token cache work as for text, and media are read and processed only when a
batch is built. One file per family; the folder is discovered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from tuneforge.data.conversation import Conversation, DataError
from tuneforge.data.media import PLACEHOLDERS, image_size, kind_of, load_image, scaled_size

if TYPE_CHECKING:
    import torch

    from tuneforge.config.multimodal import MediaArguments

IMAGE = PLACEHOLDERS["image"]
_FAMILIES: dict[str, type[VisionFamily]] = {}


class VisionFamily:
    """One family's media facts, bound to a model's config, tokenizer and processor (the image processor; the
    feature extractor of an audio model)."""

    model_types: ClassVar[tuple[str, ...]] = ()
    unused_outputs: ClassVar[tuple[str, ...]] = ()  # image processor outputs the model does not take
    kinds: ClassVar[tuple[str, ...]] = ("image",)  # the media the family's models read

    def __init__(self, config: Any, tokenizer: Any, image_processor: Any, args: MediaArguments):
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.args = args
        self.max_pixels = args.image_max_pixels
        self.min_pixels = args.image_min_pixels
        self.image_token_id: int | None = getattr(config, "image_token_id", None)
        self.image_token: str = self.token(self.image_token_id)
        self.brackets: tuple[int, int] | None = None  # tokens some families put around an image's tokens
        self.media_token_ids: set[int] = {self.image_token_id} if self.image_token_id is not None else set()

    def token(self, token_id: int | None) -> str:
        return self.tokenizer.convert_ids_to_tokens(token_id) if token_id is not None else ""

    def bracket(self, start_id: int, end_id: int) -> tuple[str, str]:
        """Record the tokens that open and close each image (they are visual: never labels); their text."""
        self.brackets = (start_id, end_id)
        start, end = self.tokenizer.convert_ids_to_tokens([start_id, end_id])
        return start, end

    # What each family defines
    def image_text(self, width: int, height: int) -> str:
        """The text standing for one image of this (already scaled) size in the prompt."""
        raise NotImplementedError

    def video_text(self, ref: str, source: str) -> str:
        """The text standing for one video (a `video:` reference) in the prompt (families with "video")."""
        raise NotImplementedError

    def audio_text(self, ref: str, source: str) -> str:
        """The text standing for one audio file (an `audio:` reference) in the prompt (families with "audio")."""
        raise NotImplementedError

    def video_inputs(self, refs: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tensors of these videos, in order (e.g. `pixel_values_videos`)."""
        raise NotImplementedError

    def audio_inputs(self, refs: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tensors of these audio files, in order (e.g. `input_features`)."""
        raise NotImplementedError

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs the model needs per token besides the ids `[batch, seq]` (none for most families)."""
        return {}

    @property
    def visual_token_ids(self) -> set[int]:
        """Ids that stand for media content (never trained on, never cut through)."""
        return {*self.media_token_ids, *(self.brackets or ())}

    # Shared behaviour
    def describe(self) -> str:
        """Everything that changes the tokens an image becomes (for the token cache's key)."""
        settings = (
            self.image_processor.to_json_string() if hasattr(self.image_processor, "to_json_string") else ""
        )
        media = self.args.model_dump(exclude={"media_dir"}) if hasattr(self.args, "model_dump") else {}
        media = {k: v for k, v in media.items() if k.startswith(("image_", "video_", "audio_"))}
        return f"{type(self).__name__}:{sorted(media.items())}:{sorted(self.media_token_ids)}:{settings}"

    def text_for(self, ref: str, source: str) -> str:
        """The text standing for one media reference in the prompt."""
        kind = kind_of(ref)
        if kind not in self.kinds:
            name = getattr(self.config, "model_type", "this model")
            raise DataError(
                f"{source}: the row has {kind} input, and model type '{name}' reads {' and '.join(self.kinds)}s "
                f"only in tuneforge; drop the {kind}s column or use a model that reads them",
                "multimodal",
            )
        if kind == "video":
            return self.video_text(ref, source)
        if kind == "audio":
            return self.audio_text(ref, source)
        size = scaled_size(*image_size(ref, source), self.max_pixels, self.min_pixels)
        return self.image_text(*size)

    def expand(self, conversation: Conversation) -> Conversation:
        """The conversation with each `<image>`, `<video>` and `<audio>` replaced by that medium's tokens."""
        if not conversation.images:
            return conversation
        texts = {kind: [] for kind in PLACEHOLDERS}
        for ref in conversation.images:
            texts[kind_of(ref)].append(self.text_for(ref, conversation.source))
        queues = {kind: iter(found) for kind, found in texts.items()}

        def fill(text: str | None) -> str | None:
            for kind, placeholder in PLACEHOLDERS.items():
                if text and placeholder in text:
                    parts = text.split(placeholder)
                    text = parts[0] + "".join(next(queues[kind]) + part for part in parts[1:])
            return text

        messages = [replace(m, content=fill(m.content) or "") for m in conversation.messages]
        return replace(conversation, messages=messages, system=fill(conversation.system))

    def image_count(self, ids: Sequence[int]) -> int:
        """How many media tokens (image, video or audio) the ids hold."""
        return sum(1 for i in ids if i in self.media_token_ids)

    def media_token_count(self, text: str) -> int:
        """How many media tokens an expanded text holds (what `image_count` finds once it is tokenized)."""
        return sum(text.count(self.token(i)) for i in self.media_token_ids)

    def pixel_inputs(self, refs: Sequence[str]) -> dict[str, torch.Tensor]:
        """The processor's tensors for these media, each kind in order (e.g. `pixel_values`)."""
        images = [r for r in refs if kind_of(r) == "image"]
        made: dict[str, Any] = {}
        if images:
            loaded = [load_image(p, self.max_pixels, self.min_pixels) for p in images]
            made.update(self.image_processor(images=loaded, return_tensors="pt"))
        videos = [r for r in refs if kind_of(r) == "video"]
        if videos:
            made.update(self.video_inputs(videos))
        audios = [r for r in refs if kind_of(r) == "audio"]
        if audios:
            made.update(self.audio_inputs(audios))
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
    """Rows with images (or videos, audio) where they cannot be used: a sentence naming how many, the first,
    and `why`."""
    with_images = [c for c in conversations if c.images]
    if with_images:
        kinds = sorted({kind_of(r) for c in with_images for r in c.images})
        raise DataError(
            f"{len(with_images)} rows have {' or '.join(k + 's' if k != 'audio' else k for k in kinds)} "
            f"(first: {with_images[0].source}), and {why}",
            "multimodal",
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
        paths = [p for row in rows for p in row.get("images", ())] * self.copies  # media references
        batch = self.collator([{k: v for k, v in row.items() if k != "images"} for row in rows])
        if paths:
            batch.update(self.family.pixel_inputs(paths))
            batch.update(self.family.token_inputs(batch["input_ids"]))
        return batch
