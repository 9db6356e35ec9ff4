"""LLaVA-NeXT (1.6): an image is shown whole at the tower's input size and again tiled at the grid
resolution (`image_grid_pinpoints`) that fits it best; the tiled feature map is cut back to the image's
aspect ratio and gets one newline feature per row. Its `<image>` tokens are as many as those features:
rows x columns of the unpadded map, plus a newline per row, plus the whole image's patches (with CLIP's
CLS token, less one under `vision_feature_select_strategy: default`)."""

from __future__ import annotations

from tuneforge.data.visual import VisionFamily, register_family


@register_family
class LlavaNext(VisionFamily):
    model_types = ("llava_next",)

    def image_text(self, width: int, height: int) -> str:
        from transformers.image_processing_utils import select_best_resolution

        vision = self.config.vision_config
        tile = self.image_processor.crop_size
        best_h, best_w = select_best_resolution([height, width], self.image_processor.image_grid_pinpoints)
        grid_h, grid_w = tile["height"] // vision.patch_size, tile["width"] // vision.patch_size
        rows, cols = grid_h * (best_h // tile["height"]), grid_w * (best_w // tile["width"])
        if width / height > cols / rows:  # wider than the tiles: rows of padding above and below go
            rows -= 2 * ((rows - int(round(height * cols / width, 7))) // 2)
        else:
            cols -= 2 * ((cols - int(round(width * rows / height, 7))) // 2)
        whole = grid_h * grid_w + int(vision.model_type == "clip_vision_model")
        whole -= int(self.config.vision_feature_select_strategy == "default")
        return self.image_token * (rows * cols + rows + whole)
