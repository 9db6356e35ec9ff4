"""LLaVA 1.5: every image is resized and cropped to the vision tower's square input, so it always becomes
the same number of `<image>` tokens: one per feature the vision tower yields (one per patch, plus CLIP's
CLS token), less the first one under `vision_feature_select_strategy: default`, which drops it."""

from __future__ import annotations

from tuneforge.data.visual import VisionFamily, register_family


@register_family
class Llava(VisionFamily):
    model_types = ("llava",)

    def image_text(self, width: int, height: int) -> str:
        vision = self.config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        features = patches + int(vision.model_type == "clip_vision_model")  # CLIP prepends CLS, SigLIP not
        dropped = int(self.config.vision_feature_select_strategy == "default")
        return self.image_token * (features - dropped)
