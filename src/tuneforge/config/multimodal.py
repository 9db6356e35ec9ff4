"""Keys of multimodal training, named and defaulted as LLaMA-Factory names them: how images, video frames and
audio are read and sized (data side) and which parts of a vision- or audio-language model train (method side)."""

from __future__ import annotations

from pydantic import Field, model_validator

from tuneforge.config.group import ConfigGroup


class MediaArguments(ConfigGroup):
    """Where image, video and audio files are, and how they are sized before the model's processor sees them."""

    media_dir: str | None = Field(
        None,
        description="Folder that relative image, video and audio paths in the data start from (default: dataset_dir).",
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
    video_max_pixels: int = Field(
        256 * 256, gt=0, description="Video frames are scaled down (aspect kept) to at most this many pixels."
    )
    video_min_pixels: int = Field(
        16 * 16, gt=0, description="Video frames are scaled up (aspect kept) to at least this many pixels."
    )
    video_fps: float = Field(
        2.0, gt=0, description="Frames sampled per second of video (evenly spaced over the whole video)."
    )
    video_maxlen: int = Field(128, gt=0, description="At most this many frames are sampled from one video.")
    audio_sampling_rate: int = Field(
        16000,
        gt=0,
        description="Audio is decoded as mono and resampled to this rate (Hz) for the feature extractor.",
    )
    use_audio_in_video: bool = Field(
        False,
        description="Read the sound track of videos too (omni models only; tuneforge trains video frames without sound).",
    )

    @model_validator(mode="after")
    def _pixel_bounds(self) -> MediaArguments:
        for kind in ("image", "video"):
            if getattr(self, f"{kind}_max_pixels") < getattr(self, f"{kind}_min_pixels"):
                raise ValueError(f"{kind}_max_pixels cannot be smaller than {kind}_min_pixels")
        if self.use_audio_in_video:
            raise ValueError(
                "use_audio_in_video: true reads the sound of videos for omni models (Qwen2.5-Omni), which tuneforge "
                "does not train yet; set it to false (frames train without their sound)"
            )
        return self


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
