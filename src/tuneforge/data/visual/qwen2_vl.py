"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: an image is `<|vision_start|>` + one `<|image_pad|>` per merged patch
+ `<|vision_end|>`; the image processor's `image_grid_thw` gives the patch grid, and the model builds its
3-D rotary positions from `mm_token_type_ids` (1 on image tokens, 2 on video tokens).

Videos (Qwen2-VL, Qwen2.5-VL): the sampled frames (an even number: the last is repeated, as LLaMA-Factory
does) are scaled into [video_min_pixels, video_max_pixels] and run through the model's image processor one by
one; each pair of consecutive frames then becomes one temporal patch, `<|vision_start|>` + one
`<|video_pad|>` per merged patch of the pair + `<|vision_end|>`. transformers' own video processor does the
same arithmetic but needs torchvision, which tuneforge does without; its settings are the image processor's
for the checkpoints that ship no video_preprocessor_config.json (Qwen2-VL, Qwen2.5-VL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tuneforge.data.conversation import DataError
from tuneforge.data.media import scaled_size, video_files, video_frames, video_sampling
from tuneforge.data.visual import VisionFamily, register_family

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

VIDEO_MODELS = ("qwen2_vl", "qwen2_5_vl")  # Qwen3-VL writes a timestamp per frame pair: not yet


@register_family
class QwenVL(VisionFamily):
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.start, self.end = self.bracket(
            self.config.vision_start_token_id, self.config.vision_end_token_id
        )
        self.video_token_id: int | None = getattr(self.config, "video_token_id", None)
        if self.config.model_type in VIDEO_MODELS and self.video_token_id is not None:
            self.kinds = ("image", "video")
            self.media_token_ids.add(self.video_token_id)
        self.video_token = self.token(self.video_token_id)

    def image_text(self, width: int, height: int) -> str:
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return self.start + self.image_token * (patches // self.image_processor.merge_size**2) + self.end

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        types = (input_ids == self.image_token_id).long()
        if self.video_token_id is not None:
            types = types + 2 * (input_ids == self.video_token_id).long()
        return {"mm_token_type_ids": types}

    # Videos
    @staticmethod
    def _min_sides(width: int, height: int) -> tuple[int, int]:
        """Sides of at least 28 pixels (LLaMA-Factory's rule for Qwen-VL frames)."""
        return max(width, 28), max(height, 28)

    def _frame_pairs(self, count: int) -> int:
        step = self.image_processor.temporal_patch_size
        return -(-count // step)

    def video_text(self, ref: str, source: str) -> str:
        indices, _, width, height = video_sampling(ref, self.args.video_fps, self.args.video_maxlen, source)
        count = len(indices) if indices is not None else len(video_files(ref))
        scaled = scaled_size(width, height, self.args.video_max_pixels, self.args.video_min_pixels)
        width, height = self._min_sides(*scaled)
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        tokens = self._frame_pairs(count) * patches // self.image_processor.merge_size**2
        return self.start + self.video_token * tokens + self.end

    def video_inputs(self, refs: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        step = self.image_processor.temporal_patch_size
        pixels, grids, seconds = [], [], []
        for ref in refs:
            frames = self._frames(ref)
            frames += [frames[-1]] * (-len(frames) % step)
            made = self.image_processor(images=frames, return_tensors="pt")
            grid = made["image_grid_thw"]
            if not bool((grid == grid[0]).all()):
                raise DataError(f"{ref}: the frames of one video must share one size", "media")
            per_frame, size = int(grid[0].prod()), self.image_processor.patch_size**2
            # each frame's patches hold the frame `step` times over (an image is a still video): keep one copy
            # per frame, then put `step` consecutive frames in its place ([channels, step, patch, patch] a row)
            flat = made["pixel_values"]
            single = flat.reshape(len(frames), per_frame, -1, step, size)[:, :, :, 0]
            groups = single.reshape(len(frames) // step, step, per_frame, -1, size)
            joined = groups.permute(0, 2, 3, 1, 4).reshape(len(frames) // step * per_frame, flat.shape[1])
            pixels.append(joined)
            grids.append([len(frames) // step, int(grid[0][1]), int(grid[0][2])])
            _, fps, _, _ = video_sampling(ref, self.args.video_fps, self.args.video_maxlen, ref)
            seconds.append(step / fps)
        inputs = {"pixel_values_videos": torch.cat(pixels), "video_grid_thw": torch.tensor(grids)}
        if self.config.model_type == "qwen2_5_vl":
            inputs["second_per_grid_ts"] = torch.tensor(seconds)
        return inputs

    def _frames(self, ref: str) -> list[Image]:
        frames = video_frames(
            ref,
            self.args.video_fps,
            self.args.video_maxlen,
            self.args.video_max_pixels,
            self.args.video_min_pixels,
        )
        return [
            f if f.size == self._min_sides(*f.size) else f.resize(self._min_sides(*f.size)) for f in frames
        ]
