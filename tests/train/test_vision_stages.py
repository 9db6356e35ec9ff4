"""Vision-language SFT and DPO on tiny models: the loss falls, the images matter, and only the parts the
freeze_* keys leave unfrozen change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import SHADE_QUESTION, SHADES, shade_images, write_dataset
from tuneforge.config.loader import build_config
from tuneforge.model.vision import part_of
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage

LF_DATA = Path(__file__).resolve().parent.parent / "fixtures" / "llamafactory" / "data"


def run(model_dir: Path, out: Path, **keys) -> list[dict]:
    base = dict(
        model_name_or_path=str(model_dir), dataset="mllm_demo", dataset_dir=str(LF_DATA), cutoff_len=1024,
        output_dir=str(out), per_device_train_batch_size=6, max_steps=6, logging_steps=1, learning_rate=1e-2,
        image_max_pixels=12544, save_steps=1000,
    )  # fmt: skip
    if keys.get("finetuning_type", "lora") == "lora":
        base["lora_rank"] = 8
    run_stage(build_config({**base, **keys}))
    return read_metrics(out / "metrics.jsonl")


def changed_parts(model_dir: Path, out: Path, model_type: str) -> set[str]:
    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    return {
        part_of(model_type, name) for name, value in after.items() if not torch.equal(value, before[name])
    }


def losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records if "loss" in r]


def test_lora_trains_the_language_model_only_and_the_loss_falls(tiny_vision_model, tmp_path):
    model_dir = tiny_vision_model("qwen2_vl")
    values = losses(run(model_dir, tmp_path / "run"))
    assert values[-1] < values[0] - 0.03, (
        values
    )  # a random head: LoRA inside the decoder moves the loss slowly
    adapter = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert adapter and all(part_of("qwen2_vl", name) == "language_model" for name in adapter)
    assert (
        tmp_path / "run" / "preprocessor_config.json"
    ).is_file()  # the folder loads as the model it trained


@pytest.mark.parametrize(
    ("family", "keys", "expected"),
    [
        ("llava_next", {}, {"language_model"}),
        ("llava", {"freeze_vision_tower": False, "freeze_multi_modal_projector": False, "freeze_language_model": True},
         {"vision_tower", "projector"}),
        ("qwen3_vl", {"freeze_multi_modal_projector": False}, {"language_model", "projector"}),
        # Gemma 3's projector starts at zero: the tower only learns once the projector does
        ("gemma3", {"freeze_vision_tower": False, "freeze_multi_modal_projector": False},
         {"language_model", "vision_tower", "projector"}),
    ],
)  # fmt: skip
def test_full_tuning_changes_exactly_the_unfrozen_parts(family, keys, expected, tiny_vision_model, tmp_path):
    model_dir = tiny_vision_model(family)
    values = losses(run(model_dir, tmp_path / "run", finetuning_type="full", learning_rate=1e-3, **keys))
    assert values[-1] < values[0], values
    assert changed_parts(model_dir, tmp_path / "run", family) == expected


def test_freeze_tuning_picks_language_layers_and_unfrozen_vision_parts(tiny_vision_model, tmp_path):
    model_dir = tiny_vision_model("qwen2_5_vl")
    run(model_dir, tmp_path / "run", finetuning_type="freeze", freeze_trainable_layers=1,
        freeze_vision_tower=False, learning_rate=1e-3)  # fmt: skip
    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    moved = {name for name in after if not torch.equal(after[name], before[name])}
    assert moved and all(
        ".layers.1." in name or part_of("qwen2_5_vl", name) == "vision_tower" for name in moved
    ), sorted(moved)
    assert any(part_of("qwen2_5_vl", name) == "vision_tower" for name in moved)
    assert not any(".layers.0." in name for name in moved)


def test_dpo_on_image_pairs_grows_the_margin(tiny_vision_model, tmp_path):
    shade_images(tmp_path)
    rows = [{"messages": [{"role": "user", "content": f"<image>{SHADE_QUESTION}"}],
             "chosen": {"role": "assistant", "content": good}, "rejected": {"role": "assistant", "content": bad},
             "images": [image]}
            for image, good, bad in (("dark.png", "Dark.", "Light."), ("light.png", "Light.", "Dark."))] * 2  # fmt: skip
    write_dataset(tmp_path, "pairs", rows, ranking=True, columns={"chosen": "chosen", "rejected": "rejected"})
    records = run(tiny_vision_model("llava"), tmp_path / "run", stage="dpo", dataset="pairs",
                  dataset_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=8, learning_rate=2e-2)  # fmt: skip
    margins = [r["rewards/margins"] for r in records if "rewards/margins" in r]
    assert margins[0] == pytest.approx(0, abs=1e-4)  # the adapter starts as the reference
    assert margins[-1] > 0.05, margins


def test_the_trained_model_tells_images_apart(shade_reader):
    """Two images, one question, two answers: after training the answer depends on the image."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    from tuneforge.config import DataArguments
    from tuneforge.data.conversation import Conversation, Message
    from tuneforge.data.visual import vision_family

    out, data = shade_reader
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    family = vision_family(model.config, tokenizer, AutoImageProcessor.from_pretrained(out), DataArguments())
    for image, expected in SHADES.items():
        conversation = Conversation(
            [Message("user", f"<image>{SHADE_QUESTION}")], images=(str(data / image),)
        )
        prompt = family.expand(conversation).as_chat()
        ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        inputs = {**ids, **family.pixel_inputs([str(data / image)])}
        inputs.update(family.token_inputs(inputs["input_ids"]))
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        answer = tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer.startswith(expected), (image, answer)
