"""Exporting a vision-language model: the merged folder carries its image processor and reads images as
base + adapter did; formats that hold only a language model are refused before anything loads."""

from __future__ import annotations

import pytest
import torch

from tests.export.test_export import export
from tests.helpers import write_images
from tuneforge.utils.errors import UserError


def image_logits(model_dir, adapter, image_path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    from tuneforge.config import DataArguments
    from tuneforge.data.conversation import Conversation, Message
    from tuneforge.data.visual import vision_family

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    family = vision_family(
        model.config, tokenizer, AutoImageProcessor.from_pretrained(model_dir), DataArguments()
    )
    chat = family.expand(
        Conversation([Message("user", "<image>Describe it.")], images=(image_path,))
    ).as_chat()
    inputs = dict(
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    )
    inputs.update(family.pixel_inputs([image_path]))
    inputs.update(family.token_inputs(inputs["input_ids"]))
    with torch.no_grad():
        return model.eval()(**inputs).logits


def test_merged_vision_model_exports_with_its_processor_and_same_logits(tiny_vision_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = tiny_vision_model("qwen2_vl")
    torch.manual_seed(3)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    (image,) = write_images(tmp_path, 1)
    expected = image_logits(base, tmp_path / "adapter", str(tmp_path / image))

    out = export(tmp_path, base, [tmp_path / "adapter"])
    assert (out / "preprocessor_config.json").is_file()
    merged = image_logits(out, None, str(tmp_path / image))
    assert torch.allclose(merged, expected, atol=1e-4), (merged - expected).abs().max()
    with pytest.raises(UserError, match="vision-language model .*export_format: safetensors"):
        export(tmp_path / "gguf", base, [tmp_path / "adapter"], export_format="gguf")


def audio_logits(model_dir, adapter, sound: str) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoFeatureExtractor, AutoModelForMultimodalLM, AutoTokenizer

    from tuneforge.config import DataArguments
    from tuneforge.data.conversation import Conversation, Message
    from tuneforge.data.visual import vision_family

    model = AutoModelForMultimodalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    family = vision_family(model.config, tokenizer, extractor, DataArguments())
    ref = f"audio:{sound}"
    chat = family.expand(Conversation([Message("user", "<audio>What is it?")], images=(ref,))).as_chat()
    inputs = dict(
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    )
    inputs.update(family.pixel_inputs([ref]))
    with torch.no_grad():
        return model.eval()(**inputs).logits


def test_merged_audio_model_exports_with_its_feature_extractor_and_same_logits(tiny_vision_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForMultimodalLM

    from tests.train.test_media_stages import LF_DATA

    base = tiny_vision_model("qwen2_audio")
    torch.manual_seed(3)
    model = AutoModelForMultimodalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    sound = str(LF_DATA / "mllm_demo_data" / "3.flac")
    expected = audio_logits(base, tmp_path / "adapter", sound)

    out = export(tmp_path, base, [tmp_path / "adapter"])
    assert "WhisperFeatureExtractor" in (out / "preprocessor_config.json").read_text()
    merged = audio_logits(out, None, sound)
    assert torch.allclose(merged, expected, atol=1e-4), (merged - expected).abs().max()
