"""A vision-language model in the inference engine and `tuneforge chat`: images go in as `<image>`
placeholders plus files, and the answer depends on the image."""

from __future__ import annotations

import pytest

from tests.helpers import SHADE_QUESTION, SHADES
from tuneforge.config import GeneratingArguments, ModelArguments
from tuneforge.inference.engine import InferenceEngine


@pytest.fixture(scope="module")
def engine(shade_reader):
    out, _ = shade_reader
    with InferenceEngine(
        ModelArguments(model_name_or_path=str(out)), GeneratingArguments(max_new_tokens=4)
    ) as running:
        yield running


def test_the_engine_answers_about_each_image(engine, shade_reader):
    _, data = shade_reader
    for image, expected in SHADES.items():
        messages = [{"role": "user", "content": f"<image>{SHADE_QUESTION}"}]
        prompt = engine.render(messages, images=[str(data / image)])
        assert engine.vision.image_count(prompt) > 0
        answer = engine.submit(
            prompt, engine.sampling_params(temperature=0), images=[str(data / image)]
        ).result()
        assert answer.text.startswith(expected), (image, answer)


def test_image_count_mismatches_and_logprobs_are_refused_in_a_sentence(engine, shade_reader):
    _, data = shade_reader
    with pytest.raises(ValueError, match="1 <image> placeholder"):
        engine.render([{"role": "user", "content": f"<image>{SHADE_QUESTION}"}], images=[])
    prompt = engine.render(
        [{"role": "user", "content": f"<image>{SHADE_QUESTION}"}], images=[str(data / "dark.png")]
    )
    with pytest.raises(ValueError, match="image tokens but no image"):
        engine.submit(prompt)
    with pytest.raises(ValueError, match="vision-language models"):
        engine.submit(prompt, logprobs=1, images=[str(data / "dark.png")])


def test_chat_cli_answers_with_an_image(shade_reader, capsys):
    from tuneforge.cli.main import main

    out, data = shade_reader
    code = main(["chat", f"--model_name_or_path={out}", "--prompt", SHADE_QUESTION, "--image", str(data / "light.png"),
                 "--max_new_tokens", "3", "--do_sample", "false"])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip().startswith("Light.")


def test_a_text_model_refuses_images(tiny_model_dir, shade_reader):
    _, data = shade_reader
    text_engine = InferenceEngine(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    with text_engine, pytest.raises(ValueError, match="text-only model; it cannot read images"):
        text_engine.render([{"role": "user", "content": "<image>Hi"}], images=[str(data / "dark.png")])
