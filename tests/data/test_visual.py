"""Image rows for vision-language models: paths, placeholders and image tokens, labels, truncation, batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_images
from tuneforge.config import DataArguments
from tuneforge.data.conversation import DataError
from tuneforge.data.dataset import build_sft_data
from tuneforge.data.loader import BadRowsError, load_examples
from tuneforge.data.media import scaled_size
from tuneforge.data.packing import training_rows
from tuneforge.data.preference import build_pair_data
from tuneforge.data.tokenized import IGNORE_INDEX
from tuneforge.data.visual import ImageCollator, vision_family

LF_DATA = Path(__file__).resolve().parent.parent / "fixtures" / "llamafactory" / "data"
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "llava_next", "gemma3"]


def bound(model_dir: Path, args: DataArguments):
    """(tokenizer, family) of a saved vision- or audio-language model, as a run builds them."""
    from transformers import AutoTokenizer

    from tuneforge.config.schema import ModelArguments
    from tuneforge.model.loader import load_image_processor

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config, processor = load_image_processor(ModelArguments(model_name_or_path=str(model_dir)))
    return tokenizer, vision_family(config, tokenizer, processor, args)


def image_rows(tmp_path: Path, rows: list[dict], name: str = "vl", **entry) -> DataArguments:
    (tmp_path / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {
        name: {
            "file_name": f"{name}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
            **entry,
        }
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return DataArguments(dataset=[name], dataset_dir=str(tmp_path), cutoff_len=1024)


def chat(*turns: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_scaled_size_keeps_the_aspect_inside_the_pixel_limits():
    assert scaled_size(300, 168, 768 * 768, 32 * 32) == (300, 168)  # inside: unchanged
    # 4000 x 3000 = 12e6 > 589824: factor sqrt(589824 / 12e6) = 0.22170..., rounded down
    assert scaled_size(4000, 3000, 768 * 768, 32 * 32) == (886, 665)
    assert scaled_size(10, 10, 768 * 768, 32 * 32) == (32, 32)  # 100 < 1024: factor 3.2


@pytest.mark.parametrize("family", FAMILIES)
def test_lf_mllm_demo_expands_each_image_to_as_many_tokens_as_the_model_has_features(
    family, tiny_vision_model
):
    import torch
    from transformers import AutoModelForImageTextToText

    model_dir = tiny_vision_model(family)
    args = DataArguments(
        dataset=["mllm_demo"], dataset_dir=str(LF_DATA), cutoff_len=2048, image_max_pixels=12544
    )
    tokenizer, bound_family = bound(model_dir, args)
    data = build_sft_data(args, tokenizer, family=bound_family)
    examples = list(data.train)
    assert len(examples) == 6 and all(e.images for e in examples)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    for example in examples:
        batch = bound_family.pixel_inputs(example.images)
        with torch.no_grad():
            features = model.model.get_image_features(**batch)
        features = getattr(features, "pooler_output", features)
        per_image = [len(f) if f.dim() == 2 else f.shape[0] * f.shape[1] for f in features]
        assert bound_family.image_count(example.input_ids) == sum(per_image) > 0, example.source
        # the image tokens are prompt: never a label
        visual = bound_family.visual_token_ids
        assert all(
            label == IGNORE_INDEX
            for i, label in zip(example.input_ids, example.labels, strict=True)
            if i in visual
        )


def test_image_paths_start_at_media_dir_and_bad_files_name_their_row(tmp_path, tiny_vision_model):
    names = write_images(tmp_path / "pics", 2)
    rows = [
        {"messages": chat("<image>What colour?", "Green."), "images": [f"pics/{names[0]}"]},
        {"messages": chat("<image><image>Compare.", "Same."), "images": [f"pics/{names[0]}"]},  # 2 vs 1
        {"messages": chat("<image>Hi", "Hello."), "images": ["pics/missing.png"]},
        {"messages": chat("<image>Hi", "Hello."), "images": ["https://example.com/a.png"]},
        {"messages": chat("Hi", "<image>"), "images": [f"pics/{names[1]}"]},  # placeholder in the answer
    ]
    args = image_rows(tmp_path, rows)
    with pytest.raises(BadRowsError) as caught:
        load_examples(args)
    text = str(caught.value)
    assert "4 of 5 rows are bad" in text and "vl.json:" in text
    problems = caught.value.problems
    assert "2 <image> placeholder(s) but 1 image(s)" in problems[0].message
    assert "missing.png does not exist" in problems[1].message
    assert "is a URL" in problems[2].message
    assert "images belong in prompt turns" in problems[3].message
    loaded = load_examples(args, on_bad_rows="skip")
    assert loaded.examples[0].images == (str(tmp_path / "pics" / names[0]),)
    # media_dir moves where relative paths start
    moved = args.model_copy(update={"media_dir": str(tmp_path / "pics"), "max_samples": 1})
    rows[0]["images"] = [names[0]]
    image_rows(tmp_path, rows[:1])
    assert load_examples(moved).examples[0].images == (str(tmp_path / "pics" / names[0]),)


def test_image_rows_for_a_text_model_missing_videos_and_unreadable_media_are_refused(
    tmp_path, tiny_vision_model, smollm2_tokenizer
):
    names = write_images(tmp_path, 1)
    args = image_rows(tmp_path, [{"messages": chat("<image>Hi", "Hello."), "images": [names[0]]}])
    with pytest.raises(DataError, match="1 rows have images .*vl.json:1.*text-only model"):
        build_sft_data(args, smollm2_tokenizer)
    (tmp_path / names[0]).write_bytes(b"not a png")
    tokenizer, family = bound(tiny_vision_model("qwen2_vl"), args)
    with pytest.raises(DataError, match=f"vl.json:1: image .*{names[0]} cannot be read"):
        build_sft_data(args.model_copy(update={"overwrite_cache": True}), tokenizer, family=family)
    videos = image_rows(tmp_path, [{"messages": chat("<video>Hi", "Hello."), "videos": ["a.mp4"]}], "v",
                        columns={"messages": "messages", "videos": "videos"})  # fmt: skip
    with pytest.raises(BadRowsError, match=r"v.json:1: videos\[0\]: video file .*a.mp4 does not exist"):
        load_examples(videos)
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match=r"v.json:1: video .*a.mp4 cannot be read"):
        build_sft_data(videos.model_copy(update={"overwrite_cache": True}), tokenizer, family=family)


def test_rows_whose_image_tokens_cutoff_would_cut_are_dropped_and_counted(tmp_path, tiny_vision_model):
    names = write_images(tmp_path, 2, sizes=((120, 120),))
    rows = [
        {
            "messages": chat("Look at this long prompt first, " * 4 + "then <image>", "Short."),
            "images": [names[0]],
        },
        {"messages": chat("<image>Hi", "Hello."), "images": [names[1]]},
    ]
    args = image_rows(tmp_path, rows)
    tokenizer, family = bound(tiny_vision_model("qwen2_vl"), args)
    whole = [len(e.input_ids) for e in build_sft_data(args, tokenizer, family=family).train]
    assert whole[0] > whole[1]
    # proportional truncation keeps the answer and the start of the prompt: the image at its end is cut
    args = args.model_copy(update={"cutoff_len": whole[1]})
    data = build_sft_data(args, tokenizer, family=family)
    assert data.dropped_cut_images == [f"{tmp_path / 'vl.json'}:1"]
    assert [e.images for e in data.train] == [(str(tmp_path / names[1]),)]
    assert "1 dropped with their image tokens cut" in data.summary()
    with pytest.raises(DataError, match="rows with images, videos or audio cannot be packed"):
        training_rows(list(data.train), args.model_copy(update={"packing": True}), "sft", 0)


def test_train_on_prompt_still_never_labels_image_tokens_and_the_cache_keeps_images(
    tmp_path, tiny_vision_model
):
    names = write_images(tmp_path, 2)
    rows = [{"messages": chat("<image>A<image>B", "C."), "images": names}]
    args = image_rows(tmp_path, rows).model_copy(update={"train_on_prompt": True})
    tokenizer, family = bound(tiny_vision_model("qwen2_vl"), args)
    first = build_sft_data(args, tokenizer, family=family)
    again = build_sft_data(args, tokenizer, family=family)  # from the token cache
    for data in (first, again):
        (example,) = list(data.train)
        assert example.images == tuple(str(tmp_path / n) for n in names)
        assert sum(label != IGNORE_INDEX for label in example.labels) > 0
        assert all(label == IGNORE_INDEX for i, label in zip(example.input_ids, example.labels, strict=True)
                   if i in family.visual_token_ids)  # fmt: skip


def test_collator_batches_pixels_in_row_order_with_qwen_token_types(tmp_path, tiny_vision_model):
    names = write_images(tmp_path, 3)
    rows = [
        {"messages": chat("<image>One", "1."), "images": [names[0]]},
        {"messages": chat("No image", "0.")},
        {"messages": chat("<image>Two<image>", "2."), "images": [names[1], names[2]]},
    ]
    args = image_rows(tmp_path, rows)
    tokenizer, family = bound(tiny_vision_model("qwen2_vl"), args)
    data = build_sft_data(args, tokenizer, family=family)
    table_rows, collator = training_rows(data.train, args, "sft", tokenizer.pad_token_id)
    batch = ImageCollator(collator, family)([table_rows[i] for i in range(3)])
    grid = batch["image_grid_thw"]
    assert grid.shape == (3, 3)
    merged = (grid.prod(-1) // family.image_processor.merge_size**2).tolist()
    per_row = (batch["input_ids"] == family.image_token_id).sum(-1).tolist()
    assert per_row == [merged[0], 0, merged[1] + merged[2]]
    assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    assert batch["mm_token_type_ids"].sum().item() == sum(per_row)


def test_preference_pairs_keep_their_images_once_per_pair(tmp_path, tiny_vision_model):
    names = write_images(tmp_path, 1)
    rows = [{"messages": chat("<image>What is it?"), "chosen": {"role": "assistant", "content": "A square."},
             "rejected": {"role": "assistant", "content": "A cat."}, "images": names}]  # fmt: skip
    args = image_rows(tmp_path, rows, ranking=True,
                      columns={"messages": "messages", "chosen": "chosen", "rejected": "rejected", "images": "images"})  # fmt: skip
    tokenizer, family = bound(tiny_vision_model("llava"), args)
    data = build_pair_data(args, tokenizer, family=family)
    (row,) = data.train
    assert row["images"] == (str(tmp_path / names[0]),)
    count = family.image_count(row["chosen_input_ids"])
    assert count == family.image_count(row["rejected_input_ids"]) > 0
