"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: an image is `<|vision_start|>` + one `<|image_pad|>` per merged patch
+ `<|vision_end|>`; the image processor's `image_grid_thw` gives the patch grid, and the model builds its
3-D rotary positions from `mm_token_type_ids` (1 on image tokens)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.data.visual import VisionFamily, register_family

if TYPE_CHECKING:
    import torch


@register_family
class QwenVL(VisionFamily):
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.start, self.end = self.bracket(
            self.config.vision_start_token_id, self.config.vision_end_token_id
        )

    def image_text(self, width: int, height: int) -> str:
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return self.start + self.image_token * (patches // self.image_processor.merge_size**2) + self.end

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.image_token_id).long()}
