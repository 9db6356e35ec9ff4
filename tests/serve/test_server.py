"""The real server on a free loopback port, driven by the official `openai` client (and raw HTTP
where a client would not send such a request)."""

import json
import threading
import time

import openai
import pytest

from tests.inference.test_engine import make_lora
from tuneforge.config import GeneratingArguments, ModelArguments
from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.app import Limits
from tuneforge.serve.server import BackgroundServer

try:  # the HTTP client the installed openai package is built on
    import httpx2 as httpx
except ImportError:  # older openai releases
    import httpx

KEY = "test-key-123"
pytestmark = pytest.mark.slow  # SmolLM2 weights


@pytest.fixture(scope="module")
def server(smollm2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("smol-adapters")
    adapters = {
        "pirate": str(make_lora(smollm2_dir, root / "pirate", seed=1, scale=3)),
        "poet": str(make_lora(smollm2_dir, root / "poet", seed=2, scale=3)),
    }
    engine = InferenceEngine(
        ModelArguments(), GeneratingArguments(max_new_tokens=24), adapters=adapters, batch_wait_s=0.2
    )
    limits = Limits(max_body_bytes=64 * 1024, max_n=4)
    with BackgroundServer(engine, api_key=KEY, limits=limits) as running:
        yield running
    engine.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_base_and_each_adapter(client):
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct", "pirate", "poet"]


def test_streamed_text_equals_the_non_streamed_text(client):
    kwargs = dict(model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=20)
    whole = client.chat.completions.create(**kwargs)
    assert "Paris" in whole.choices[0].message.content
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 5
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    pieces, reasons = [], []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == whole.choices[0].message.content
    assert reasons[-1] == whole.choices[0].finish_reason
    assert len([p for p in pieces if p]) > 3  # really streamed, piece by piece


def test_two_adapters_in_one_batch_answer_as_they_do_alone(client, server):
    engine = server.server.config.app.state.engine

    def ask(model):
        reply = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=12)
        return reply.choices[0].message.content

    alone = {m: ask(m) for m in ("pirate", "poet")}
    assert alone["pirate"] != alone["poet"]
    before, together = len(engine.batch_sizes), {}
    threads = [threading.Thread(target=lambda m=m: together.__setitem__(m, ask(m))) for m in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.batch_sizes[before:] == [2]
    assert together == alone


def test_completion_and_n_choices(client):
    def complete():
        return client.completions.create(
            model="smollm2-135m-instruct",
            prompt="The capital of France is",
            max_tokens=5,
            temperature=0.8,
            n=2,
            seed=3,
        )

    reply = complete()
    assert len(reply.choices) == 2 and all(c.text for c in reply.choices)
    assert [c.text for c in complete().choices] == [c.text for c in reply.choices]  # seeded
    assert reply.usage.completion_tokens <= 10


def test_api_key_is_required_except_for_health(server):
    anonymous = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    assert httpx.post(f"{server.url}/v1/chat/completions", json={}).status_code == 401
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_limits_answer_400_413_422_never_500(client, server):
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192 tokens"):
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "hi " * 8000}],
            max_tokens=500,
        )
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 4"):
        client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION, n=9)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = json.dumps({"model": "poet", "messages": [{"role": "user", "content": "x" * 70_000}]})
    too_big = httpx.post(f"{server.url}/v1/chat/completions", content=big, headers=headers)
    assert too_big.status_code == 413 and "larger than 65536 bytes" in too_big.json()["error"]["message"]
    bad_json = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json", headers=headers)
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    bad_role = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "poet", "messages": [{"role": "wizard", "content": "hi"}]},
        headers=headers,
    )
    assert bad_role.status_code == 422 and "messages.0.role" in bad_role.json()["error"]["message"]
    # values the sampler cannot use are refused with their bounds, before they reach the batch
    for extra, words in [({"seed": 2**64}, "seed must be between"), ({"top_k": 10**20}, "top_k must be")]:
        reply = httpx.post(
            f"{server.url}/v1/chat/completions", json={"messages": QUESTION, **extra}, headers=headers
        )
        assert reply.status_code == 400 and words in reply.json()["error"]["message"], reply.text
    with pytest.raises(openai.BadRequestError, match="repetition_penalty must be between 0.01"):
        client.chat.completions.create(model="", messages=QUESTION, extra_body={"repetition_penalty": 1e-300})


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    engine = server.server.config.app.state.engine
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "poet", "messages": QUESTION, "stream": True, "max_tokens": 2000, "temperature": 0}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert engine.load == 1 and any("content" in line for line in received)
    deadline = time.monotonic() + 3
    while engine.load and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.load == 0


def test_a_client_that_gives_up_on_a_non_streamed_answer_frees_its_slot(server):
    engine = server.server.config.app.state.engine
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "poet", "messages": QUESTION, "max_tokens": 2000, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=1.0)
    deadline = time.monotonic() + 5
    while engine.load and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.load == 0  # not 2000 tokens later


def test_a_chunked_body_over_the_limit_is_413(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(4):
            yield b"x" * 32768
        yield b'"}]}'

    reply = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(), headers=headers)
    assert reply.status_code == 413 and "larger than 65536 bytes" in reply.json()["error"]["message"]


def test_a_flood_gets_429_with_retry_after(tiny_model_dir):
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(tiny_model_dir)),
        GeneratingArguments(max_new_tokens=64),
        max_queue=2,
        max_batch_size=1,
    )
    try:
        with BackgroundServer(engine) as running:
            body = {"model": tiny_model_dir.name, "prompt": "hello", "max_tokens": 64, "temperature": 0}
            statuses, retry = [], []

            def post():
                reply = httpx.post(f"{running.url}/v1/completions", json=body, timeout=60)
                statuses.append(reply.status_code)
                retry.append(reply.headers.get("retry-after"))

            threads = [threading.Thread(target=post) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert statuses.count(200) >= 2 and statuses.count(429) >= 1
            assert set(statuses) == {200, 429}
            assert all(r == "1" for s, r in zip(statuses, retry, strict=True) if s == 429)
    finally:
        engine.close()
