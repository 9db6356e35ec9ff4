"""Images through the OpenAI API: `image_url` content parts (data: URLs, file:// paths) with the real client."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.helpers import SHADE_QUESTION, SHADES
from tuneforge.config import GeneratingArguments, ModelArguments
from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.server import BackgroundServer


@pytest.fixture(scope="module")
def client(shade_reader):
    out, _ = shade_reader
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(out)), GeneratingArguments(max_new_tokens=4)
    )
    with BackgroundServer(engine) as running:
        yield openai.OpenAI(base_url=f"{running.url}/v1", api_key="none", max_retries=0)
    engine.close()


def ask(client, image_url: str):
    parts = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": SHADE_QUESTION}]
    return client.chat.completions.create(
        model="", messages=[{"role": "user", "content": parts}], temperature=0, max_tokens=3
    )


def test_data_urls_and_server_files_are_answered_about(client, shade_reader):
    _, data = shade_reader
    for image, expected in SHADES.items():
        encoded = base64.b64encode((data / image).read_bytes()).decode()
        answer = ask(client, f"data:image/png;base64,{encoded}").choices[0].message.content
        assert answer.startswith(expected), (image, answer)
    light = ask(client, (data / "light.png").as_uri()).choices[0].message.content
    assert light.startswith(SHADES["light.png"])


def test_remote_urls_and_bad_data_are_refused_with_400(client):
    with pytest.raises(openai.BadRequestError, match="not fetched"):
        ask(client, "https://example.com/cat.png")
    with pytest.raises(openai.BadRequestError, match="base64"):
        ask(client, "data:image/png,rawbytes")
