"""Video (Qwen2-VL, Qwen2.5-VL) and audio (Qwen2-Audio) rows as LLaMA-Factory writes them: its demo files
(mp4, avi, mp3, wav, flac) load and train, the media tokens match what the model computes, they are never
labels, and a trained model's answer depends on the order of a video's frames or the pitch of a sound."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import write_dataset
from tuneforge.config import DataArguments
from tuneforge.config.loader import build_config
from tuneforge.data.conversation import Conversation, DataError, Message
from tuneforge.data.media import video_sampling
from tuneforge.data.visual import vision_family
from tuneforge.model.vision import part_of
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage

LF_DATA = Path(__file__).resolve().parent.parent / "fixtures" / "llamafactory" / "data"


def run(model_dir: Path, out: Path, dataset: str, data_dir: Path = LF_DATA, **keys) -> list[dict]:
    base = dict(
        model_name_or_path=str(model_dir), dataset=dataset, dataset_dir=str(data_dir), cutoff_len=2048,
        output_dir=str(out), per_device_train_batch_size=3, max_steps=6, logging_steps=1, learning_rate=1e-2,
        save_steps=1000, lora_rank=8,
    )  # fmt: skip
    run_stage(build_config({**base, **keys}))
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def family_of(model_dir: Path, **media):
    from transformers import AutoConfig, AutoTokenizer

    from tuneforge.config.schema import ModelArguments
    from tuneforge.model.loader import load_image_processor

    config, processor = load_image_processor(ModelArguments(model_name_or_path=str(model_dir)))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert AutoConfig.from_pretrained(model_dir).model_type == config.model_type
    return vision_family(config, tokenizer, processor, DataArguments(**media))


# Video
def test_lf_video_demo_trains_qwen2_vl_with_lora(tiny_vision_model, tmp_path):
    """mllm_video_demo.json (an mp4, an avi, another mp4) unchanged: the loss falls, only the language model's
    LoRA layers train, and the runs' video tokens are what the model's vision tower yields (else its forward
    raises)."""
    model_dir = tiny_vision_model("qwen2_vl")
    values = run(model_dir, tmp_path / "run", "mllm_video_demo", video_max_pixels=64 * 64, video_maxlen=8)
    assert values[-1] < values[0] - 0.03, values
    adapter = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert adapter and all(part_of("qwen2_vl", name) == "language_model" for name in adapter)


def test_video_frames_are_sampled_as_llamafactory_samples_them():
    """floor(duration x video_fps) frames, at most video_maxlen, evenly from first to last (1.mp4: 9.72 s of
    243 frames at 25 fps; 2.avi: 270 frames, 9.03 s)."""
    mp4 = "video:" + json.dumps([str(LF_DATA / "mllm_demo_data" / "1.mp4")])
    indices, fps, width, height = video_sampling(mp4, 2.0, 128, "t")
    assert (len(indices), width, height) == (19, 640, 360)
    assert indices[0] == 0 and indices[-1] == 242
    assert fps == pytest.approx(19 / 9.72)
    indices, _, _, _ = video_sampling(mp4, 2.0, 8, "t")
    assert indices == np.linspace(0, 242, 8).astype(np.int32).tolist()
    avi = "video:" + json.dumps([str(LF_DATA / "mllm_demo_data" / "2.avi")])
    assert len(video_sampling(avi, 1.0, 128, "t")[0]) == 9


def test_video_patches_hold_consecutive_frames_in_each_temporal_patch(tiny_vision_model, tmp_path):
    """A video's patch rows are [channels, 2 frames, patch, patch]: the first frame's pixels where an image's
    first copy is, the second frame's where its second copy is (transformers' video layout), and a video of
    one repeated frame is exactly that frame as an image."""
    from PIL import Image

    family = family_of(tiny_vision_model("qwen2_vl"), video_max_pixels=56 * 56, video_min_pixels=56 * 56)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(paths[-1])
    video = family.video_inputs(["video:" + json.dumps([str(p) for p in paths])])
    frames = [family.pixel_inputs([str(p)])["pixel_values"] for p in paths]
    rows, patch = frames[0].shape[0], family.image_processor.patch_size**2
    assert video["video_grid_thw"].tolist() == [[1, 4, 4]] and video["pixel_values_videos"].shape == (
        rows,
        3 * 2 * patch,
    )
    split = video["pixel_values_videos"].reshape(rows, 3, 2, patch)
    for slot, frame in enumerate(frames):
        assert torch.equal(split[:, :, slot], frame.reshape(rows, 3, 2, patch)[:, :, 0])
    still = family.video_inputs(["video:" + json.dumps([str(paths[0])] * 2)])
    assert torch.equal(still["pixel_values_videos"], frames[0])
    text = family.video_text("video:" + json.dumps([str(p) for p in paths]), "t")
    assert text.count(family.video_token) == rows // family.image_processor.merge_size**2


def _shaded_frames(folder: Path) -> dict[str, list[str]]:
    from PIL import Image

    rng = np.random.default_rng(1)
    for name, level in (("dark", 40), ("light", 215)):
        pixels = np.clip(level + rng.normal(0, 20, (56, 56, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return {"Brighter.": ["dark.png", "light.png"], "Darker.": ["light.png", "dark.png"]}


ORDER_QUESTION, PITCH_QUESTION = "Brighter or darker?", "High or low?"
SMALL_FRAMES = {"video_max_pixels": 56 * 56, "video_min_pixels": 56 * 56}


@pytest.fixture(scope="module")
def order_reader(tiny_vision_model, tmp_path_factory) -> tuple[Path, Path, dict[str, list[str]]]:
    """A tiny Qwen2.5-VL fully tuned to answer "Brighter." or "Darker." about two videos of the same two
    frames in opposite order (about 20 s): (model folder, data folder, answer: frames)."""
    data = tmp_path_factory.mktemp("clips")
    videos = _shaded_frames(data)
    rows = [{"messages": [{"role": "user", "content": f"<video>{ORDER_QUESTION}"},
                          {"role": "assistant", "content": answer}], "videos": [frames]}
            for answer, frames in videos.items()] * 4  # fmt: skip
    write_dataset(data, "clips", rows, columns={"videos": "videos"})
    out = tmp_path_factory.mktemp("order-reader") / "run"
    run(
        tiny_vision_model("qwen2_5_vl"), out, "clips", data, finetuning_type="full", freeze_vision_tower=False,
        freeze_multi_modal_projector=False, max_steps=40, per_device_train_batch_size=8, logging_steps=10,
        **SMALL_FRAMES,
    )  # fmt: skip
    return out, data, videos


def _answer(model, family, ref: str, question: str, placeholder: str) -> str:
    conversation = Conversation([Message("user", f"{placeholder}{question}")], images=(ref,))
    ids = family.tokenizer.apply_chat_template(
        family.expand(conversation).as_chat(),
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    inputs = {**ids, **family.pixel_inputs([ref])}
    inputs.update(family.token_inputs(inputs["input_ids"]))
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return family.tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_the_trained_model_tells_the_order_of_frames_apart(order_reader):
    """Same two frames, opposite order, two answers: the answer follows the order, which only the temporal
    patch carries."""
    from transformers import AutoModelForImageTextToText

    out, data, videos = order_reader
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    family = family_of(out, **SMALL_FRAMES)
    for expected, frames in videos.items():
        ref = "video:" + json.dumps([str(data / f) for f in frames])
        assert "second_per_grid_ts" in family.pixel_inputs(
            [ref]
        )  # Qwen2.5-VL's time scale of temporal patches
        answer = _answer(model, family, ref, ORDER_QUESTION, "<video>")
        assert answer.startswith(expected), (frames, answer)


def test_a_video_file_reaches_the_model_through_the_engine(order_reader, tmp_path):
    """The same clips written as mp4 files (2 frames at 2 fps, MPEG-4 by PyAV) answered through the engine."""
    import av
    from PIL import Image

    from tuneforge.config import GeneratingArguments, ModelArguments
    from tuneforge.data.media import media_ref
    from tuneforge.inference.engine import InferenceEngine

    out, data, videos = order_reader
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(out)),
        GeneratingArguments(max_new_tokens=3, do_sample=False),
        media=DataArguments(**SMALL_FRAMES),
    )
    with engine:
        for expected, frames in videos.items():
            path = tmp_path / f"{expected}mp4"
            with av.open(str(path), "w") as container:
                stream = container.add_stream("mpeg4", rate=2)
                stream.width, stream.height, stream.pix_fmt = 56, 56, "yuv420p"
                for name in frames:
                    frame = av.VideoFrame.from_image(Image.open(data / name).convert("RGB")).reformat(
                        format="yuv420p"
                    )
                    container.mux(stream.encode(frame))
                container.mux(stream.encode())
            ref = media_ref("video", str(path))
            prompt = engine.render([{"role": "user", "content": f"<video>{ORDER_QUESTION}"}], images=[ref])
            answer = "".join(engine.submit(prompt, images=[ref]))
            assert answer.startswith(expected), (frames, answer)


def test_video_rows_for_a_model_without_videos_are_refused_naming_the_row(tiny_vision_model, tmp_path):
    with pytest.raises(DataError, match=r"mllm_video_demo.json:\d+.*video input.*'llava'"):
        run(tiny_vision_model("llava"), tmp_path / "run", "mllm_video_demo", max_steps=1)


def test_a_missing_video_placeholder_names_the_row(tiny_vision_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _shaded_frames(data)
    rows = [{"messages": [{"role": "user", "content": "What happens?"}, {"role": "assistant", "content": "x"}],
             "videos": [["dark.png", "light.png"]]}]  # fmt: skip
    write_dataset(data, "clips", rows, columns={"videos": "videos"})
    with pytest.raises(Exception, match=r"clips.json:1.*0 <video> placeholder\(s\) but 1 video"):
        run(tiny_vision_model("qwen2_vl"), tmp_path / "run", "clips", data, max_steps=1)


# Audio
def _tone(path: Path, hertz: float, seconds: float = 1.5, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * math.pi * hertz * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def test_lf_audio_demo_trains_qwen2_audio(tiny_vision_model, tmp_path):
    """mllm_audio_demo.json (mp3 at 48 kHz stereo, wav, flac) unchanged: decoded to 16 kHz mono, the loss falls
    and only the language model's LoRA layers train; the audio tokens are what the encoder yields (else the
    forward raises) and never labels."""
    model_dir = tiny_vision_model("qwen2_audio")
    values = run(model_dir, tmp_path / "run", "mllm_audio_demo")
    assert values[-1] < values[0] - 0.03, values
    adapter = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert adapter and all(part_of("qwen2_audio", name) == "language_model" for name in adapter)
    family = family_of(model_dir)
    ref = "audio:" + str(LF_DATA / "mllm_demo_data" / "2.wav")
    # 2.wav is 2.9 s, cut at the tiny extractor's 2 s window: 200 frames -> 100 -> 50 tokens
    assert family.audio_text(ref, "t").count(family.audio_token) == 50


def test_audio_shorter_than_the_window_gets_fewer_tokens(tiny_vision_model, tmp_path):
    family = family_of(tiny_vision_model("qwen2_audio"))
    _tone(tmp_path / "short.wav", 440, seconds=0.5)
    ref = "audio:" + str(tmp_path / "short.wav")
    tokens = family.audio_text(ref, "t").count(family.audio_token)
    assert tokens == ((50 - 1) // 2 + 1 - 2) // 2 + 1  # 0.5 s at 16 kHz: 50 frames of 160 samples
    assert int(family.audio_inputs([ref])["feature_attention_mask"].sum()) == 50


@pytest.fixture(scope="module")
def tone_reader(tiny_vision_model, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A tiny Qwen2-Audio fully tuned to answer "Low." about a 200 Hz tone and "High." about a 3 kHz one
    (the random encoder needs about 35 steps before the answers part; the loss is near 0 by step 60)."""
    data = tmp_path_factory.mktemp("tones")
    tones = {"Low.": "low.wav", "High.": "high.wav"}
    _tone(data / "low.wav", 200)
    _tone(data / "high.wav", 3000)
    rows = [{"messages": [{"role": "user", "content": f"<audio>{PITCH_QUESTION}"},
                          {"role": "assistant", "content": answer}], "audios": [name]}
            for answer, name in tones.items()] * 4  # fmt: skip
    write_dataset(data, "tones", rows, columns={"audios": "audios"})
    out = tmp_path_factory.mktemp("tone-reader") / "run"
    run(
        tiny_vision_model("qwen2_audio"), out, "tones", data, finetuning_type="full", freeze_vision_tower=False,
        freeze_multi_modal_projector=False, max_steps=64, per_device_train_batch_size=8, logging_steps=10,
    )  # fmt: skip
    return out, data, tones


def test_the_trained_model_tells_high_and_low_tones_apart(tone_reader):
    from transformers import AutoModelForMultimodalLM

    out, data, tones = tone_reader
    model = AutoModelForMultimodalLM.from_pretrained(out).eval()
    family = family_of(out)
    for expected, name in tones.items():
        answer = _answer(model, family, "audio:" + str(data / name), PITCH_QUESTION, "<audio>")
        assert answer.startswith(expected), (name, answer)


def test_serve_answers_about_input_audio_parts(tone_reader):
    """OpenAI's `input_audio` content part (base64 wav) through the real client."""
    import base64

    import openai

    from tuneforge.config import GeneratingArguments, ModelArguments
    from tuneforge.inference.engine import InferenceEngine
    from tuneforge.serve.server import BackgroundServer

    out, data, tones = tone_reader
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(out)), GeneratingArguments(max_new_tokens=3)
    )
    with engine, BackgroundServer(engine) as running:
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="none", max_retries=0)
        for expected, name in tones.items():
            sound = {"data": base64.b64encode((data / name).read_bytes()).decode(), "format": "wav"}
            parts = [{"type": "input_audio", "input_audio": sound}, {"type": "text", "text": PITCH_QUESTION}]
            reply = client.chat.completions.create(
                model="", messages=[{"role": "user", "content": parts}], temperature=0, max_tokens=3
            )
            assert reply.choices[0].message.content.startswith(expected), (name, reply)
        with pytest.raises(openai.BadRequestError, match="image"):
            parts = [{"type": "image_url", "image_url": {"url": (data / "low.wav").as_uri()}}]
            client.chat.completions.create(
                model="", messages=[{"role": "user", "content": parts}], max_tokens=1
            )


def test_chat_cli_answers_about_audio(tone_reader, capsys):
    from tuneforge.cli.main import main

    out, data, _ = tone_reader
    code = main(["chat", f"--model_name_or_path={out}", "--prompt", PITCH_QUESTION, "--audio", str(data / "high.wav"),
                 "--max_new_tokens", "3", "--do_sample", "false"])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip().startswith("High.")


def test_audio_rows_for_a_text_model_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(DataError, match=r"rows have audio.*text-only model"):
        run(tiny_model_dir, tmp_path / "run", "mllm_audio_demo", max_steps=1)


def test_use_audio_in_video_is_refused_in_a_sentence():
    with pytest.raises(Exception, match="use_audio_in_video"):
        build_config({"model_name_or_path": "x", "dataset": "d", "use_audio_in_video": True})


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_dpo_on_audio_and_video_pairs_grows_the_margin(kind, tiny_vision_model, tmp_path):
    """LoRA DPO on pairs whose prompts hold a sound or a video (the policy and reference passes take the media
    tensors; a token count the encoder disagrees with would raise). The rejected answer is one fixed
    sentence: a LoRA on the language model alone cannot learn to read a random encoder's output in 8 steps."""
    if kind == "audio":
        _tone(tmp_path / "low.wav", 200)
        _tone(tmp_path / "high.wav", 3000)
        media = [("low.wav", "Low.", "Purple."), ("high.wav", "High.", "Purple.")]
        model, question = "qwen2_audio", PITCH_QUESTION
    else:
        videos = _shaded_frames(tmp_path)
        media = [(videos["Brighter."], "Brighter.", "Purple."), (videos["Darker."], "Darker.", "Purple.")]
        model, question = "qwen2_vl", ORDER_QUESTION
    rows = [{"messages": [{"role": "user", "content": f"<{kind}>{question}"}],
             "chosen": {"role": "assistant", "content": good}, "rejected": {"role": "assistant", "content": bad},
             f"{kind}s": [item]}
            for item, good, bad in media] * 2  # fmt: skip
    columns = {"chosen": "chosen", "rejected": "rejected", f"{kind}s": f"{kind}s"}
    write_dataset(tmp_path, "pairs", rows, ranking=True, columns=columns)
    out = tmp_path / "run"
    run(tiny_vision_model(model), out, "pairs", tmp_path, stage="dpo", per_device_train_batch_size=4, max_steps=8,
        learning_rate=2e-2, **SMALL_FRAMES)  # fmt: skip
    margins = [r["rewards/margins"] for r in read_metrics(out / "metrics.jsonl") if "rewards/margins" in r]
    assert margins[0] == pytest.approx(0, abs=1e-4)  # the adapter starts as the reference
    assert margins[-1] > 0.05, margins
