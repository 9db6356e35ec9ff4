"""Keys of vision-language training, named and defaulted as LLaMA-Factory names them: how images are sized
(data side) and which parts of a vision-language model train (method side)."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.group import ConfigGroup


class MediaArguments(ConfigGroup):
    """Where image files are and how large they may be before the model's image processor sees them."""

    media_dir: str | None = Field(
        None,
        description="Folder that relative image paths in the data start from (default: dataset_dir).",
        json_schema_extra={"path": "always"},
    )
    image_max_pixels: int = Field(
        768 * 768,
        gt=0,
        description="Larger images are scaled down (aspect kept) to at most this many pixels.",
    )
    image_min_pixels: int = Field(
        32 * 32, gt=0, description="Smaller images are scaled up (aspect kept) to at least this many pixels."
    )


class VisionFreezeArguments(ConfigGroup):
    """Which parts of a vision-language model train (text-only models ignore these keys)."""

    freeze_vision_tower: bool = Field(
        True, description="Vision-language models: keep the image encoder frozen."
    )
    freeze_multi_modal_projector: bool = Field(
        True,
        description="Vision-language models: keep the projector from image features to text embeddings frozen.",
    )
    freeze_language_model: bool = Field(
        False,
        description="Vision-language models: keep the language model frozen (train the vision side only).",
    )
