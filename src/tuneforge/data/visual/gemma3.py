"""Gemma 3: every image is resized to the vision tower's square input and pooled to a fixed
`mm_tokens_per_image` soft tokens, written between blank lines as `<start_of_image>` + soft tokens +
`<end_of_image>`; `token_type_ids` (1 on image tokens) let the image attend to itself both ways."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.data.visual import VisionFamily, register_family

if TYPE_CHECKING:
    import torch


@register_family
class Gemma3(VisionFamily):
    model_types = ("gemma3",)
    unused_outputs = ("num_crops",)  # pan-and-scan crops are not made (image_do_pan_and_scan)

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.start, self.end = self.bracket(self.config.boi_token_index, self.config.eoi_token_index)

    def image_text(self, width: int, height: int) -> str:
        return f"\n\n{self.start}{self.image_token * self.config.mm_tokens_per_image}{self.end}\n\n"

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"token_type_ids": (input_ids == self.image_token_id).long()}
