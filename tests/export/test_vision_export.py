"""Exporting a vision- or audio-language model: the merged folder carries its image processor (or feature
extractor) and reads images (sounds) as base + adapter did; formats that hold only a language model are refused
before anything loads."""

from __future__ import annotations

import pytest
import torch

from tests.export.test_export import export
from tests.helpers import write_images
from tuneforge.utils.errors import UserError


def media_logits(model_dir, adapter, ref: str, placeholder: str) -> torch.Tensor:
    """The model's logits (with `adapter` when given) for one question about one medium (a media reference)."""
    from peft import PeftModel
    from transformers import AutoModelForMultimodalLM, AutoTokenizer

    from tuneforge.config import DataArguments
    from tuneforge.config.schema import ModelArguments
    from tuneforge.data.conversation import Conversation, Message
    from tuneforge.data.visual import vision_family
    from tuneforge.model.loader import load_image_processor

    model = AutoModelForMultimodalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config, processor = load_image_processor(ModelArguments(model_name_or_path=str(model_dir)))
    family = vision_family(config, tokenizer, processor, DataArguments())
    chat = family.expand(
        Conversation([Message("user", f"{placeholder}Describe it.")], images=(ref,))
    ).as_chat()
    inputs = dict(
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    )
    inputs.update(family.pixel_inputs([ref]))
    inputs.update(family.token_inputs(inputs["input_ids"]))
    with torch.no_grad():
        return model.eval()(**inputs).logits


@pytest.mark.parametrize(("family", "kind"), [("qwen2_vl", "image"), ("qwen2_audio", "audio")])
def test_merged_model_exports_with_its_processor_and_same_logits(family, kind, tiny_vision_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForMultimodalLM

    from tests.train.test_media_stages import LF_DATA

    base = tiny_vision_model(family)
    torch.manual_seed(3)
    model = AutoModelForMultimodalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    if kind == "image":
        ref = str(tmp_path / write_images(tmp_path, 1)[0])
    else:
        ref = f"audio:{LF_DATA / 'mllm_demo_data' / '3.flac'}"  # LLaMA-Factory's own demo sound
    expected = media_logits(base, tmp_path / "adapter", ref, f"<{kind}>")

    out = export(tmp_path, base, [tmp_path / "adapter"])
    processor = (out / "preprocessor_config.json").read_text()
    assert ("WhisperFeatureExtractor" in processor) == (kind == "audio")
    merged = media_logits(out, None, ref, f"<{kind}>")
    assert torch.allclose(merged, expected, atol=1e-4), (merged - expected).abs().max()
    with pytest.raises(UserError, match="model .*export_format: safetensors"):
        export(tmp_path / "gguf", base, [tmp_path / "adapter"], export_format="gguf")
