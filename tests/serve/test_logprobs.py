"""Log-probabilities, echo, token-id prompts and the tokenizer endpoints, as OpenAI and vLLM define them
(what lm-evaluation-harness's `local-completions` reads), checked against the model run directly."""

import json

import openai
import pytest
import torch

from tests.inference.test_engine import make_lora
from tuneforge.config import ModelArguments
from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.server import BackgroundServer

try:  # the HTTP client the installed openai package is built on
    import httpx2 as httpx
except ImportError:  # older openai releases
    import httpx


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    adapter = make_lora(tiny_model_dir, tmp_path_factory.mktemp("lp") / "a", seed=1, scale=30)
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(tiny_model_dir)), adapters={"a": str(adapter)}, batch_wait_s=0.2
    )
    with BackgroundServer(engine) as running:
        yield running, engine, adapter
    engine.close()


@pytest.fixture(scope="module")
def reference(tiny_model_dir, served):
    """log_softmax of the model's logits at every position, computed with transformers (and PEFT) directly."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    models = {None: base}

    def scores(ids: list[int], adapter: str | None = None) -> torch.Tensor:
        if adapter not in models:
            models[adapter] = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(tiny_model_dir), served[2]
            ).eval()
        with torch.no_grad():
            return models[adapter](input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)

    return scores


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


SHORT, LONG = [5, 6, 7, 8], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]


@pytest.mark.parametrize("model", [None, "a"])
def test_echoed_prompt_logprobs_equal_the_models_own(served, reference, model):
    server, engine, _ = served
    body = {"prompt": LONG, "max_tokens": 1, "echo": True, "logprobs": 3, "temperature": 0}
    if model:
        body["model"] = model
    reply = post(server, "/v1/completions", body).json()
    choice = reply["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(LONG) + 1  # the prompt, then the one generated token
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    scores = reference(LONG, model)
    want = [float(scores[t - 1, LONG[t]]) for t in range(1, len(LONG))]
    assert lp["token_logprobs"][1 : len(LONG)] == pytest.approx(want, abs=1e-4)
    greedy = int(scores[-1].argmax())
    assert lp["token_logprobs"][-1] == pytest.approx(float(scores[-1, greedy]), abs=1e-4)
    for top, logprob in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:], strict=True):
        assert len(top) <= 3 and max(top.values()) >= logprob - 1e-6  # best first, k of them
    assert choice["text"].startswith(engine.tokenizer.decode(LONG))
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"][0] == 0 and lp["text_offset"][-1] == len(choice["text"]) - len(lp["tokens"][-1])
    assert reply["usage"]["prompt_tokens"] == len(LONG)


def test_several_prompts_in_one_call_score_as_each_does_alone(served):
    server, _, _ = served
    body = {"max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    together = post(server, "/v1/completions", {**body, "prompt": [SHORT, LONG]}).json()["choices"]
    assert [c["index"] for c in together] == [0, 1]
    for ids, choice in zip([SHORT, LONG], together, strict=True):
        alone = post(server, "/v1/completions", {**body, "prompt": ids}).json()["choices"][0]
        assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(
            alone["logprobs"]["token_logprobs"][1:], abs=1e-4
        )  # left padding in a shared batch changes nothing


def test_max_tokens_zero_with_echo_only_scores_the_prompt(served, reference):
    server, _, _ = served
    reply = post(server, "/v1/completions", {"prompt": SHORT, "max_tokens": 0, "echo": True, "logprobs": 0})
    choice = reply.json()["choices"][0]
    assert len(choice["logprobs"]["token_logprobs"]) == len(SHORT)
    assert choice["logprobs"]["top_logprobs"][1] == {}
    assert choice["finish_reason"] == "length" and reply.json()["usage"]["completion_tokens"] == 0
    scores = reference(SHORT)
    assert choice["logprobs"]["token_logprobs"][-1] == pytest.approx(float(scores[-2, SHORT[-1]]), abs=1e-4)
    refused = post(server, "/v1/completions", {"prompt": SHORT, "max_tokens": 0})
    assert refused.status_code == 400 and "echo" in refused.json()["error"]["message"]


def test_generated_logprobs_stream_as_they_come_and_match_the_whole_answer(served):
    server, _, _ = served
    body = {"prompt": "Hello there", "max_tokens": 8, "logprobs": 2, "temperature": 0}
    whole = post(server, "/v1/completions", body).json()["choices"][0]
    assert len(whole["logprobs"]["token_logprobs"]) == 8 or whole["finish_reason"] == "stop"
    streamed, text = [], ""
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    text += c["text"]
                    if c["logprobs"]:
                        streamed += c["logprobs"]["token_logprobs"]
    assert text == whole["text"]
    assert streamed == pytest.approx(whole["logprobs"]["token_logprobs"], abs=1e-5)


def test_chat_logprobs_through_the_openai_client(served, reference):
    server, engine, _ = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat.completions.create(
        model="a", messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=4
    )
    content = reply.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 4 for t in content)
    assert all(t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob for t in content)
    prompt = engine.render(messages)
    first = reference(prompt, "a")[-1]
    assert content[0].logprob == pytest.approx(float(first.max()), abs=1e-4)  # greedy: the best token
    assert content[0].bytes == list(content[0].token.encode())
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="a", messages=messages, max_tokens=2, top_logprobs=2)


def test_tokenizer_endpoints_agree_with_the_engine(served):
    server, engine, _ = served
    text = "Hello 世界 🙂"
    ids = post(server, "/tokenize", {"prompt": text, "add_special_tokens": False}).json()
    assert ids["tokens"] == engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids["count"] == len(ids["tokens"]) and ids["max_model_len"] == engine.context_length
    assert post(server, "/detokenize", {"tokens": ids["tokens"]}).json() == {"prompt": text}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = post(server, "/tokenize", {"messages": messages}).json()["tokens"]
    assert rendered == engine.render(messages[1:], "Be brief.")
    info = httpx.get(f"{server.url}/tokenizer_info").json()
    assert info["eos_token"] == engine.tokenizer.eos_token
    from jinja2 import Environment

    jinja = Environment().from_string(info["chat_template"])
    assert jinja.render(messages=messages, add_generation_prompt=True) == engine.tokenizer.decode(rendered)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"prompt": [5, 10**9]}, "outside this model's vocabulary"),
        ({"prompt": []}, "prompt is empty"),
        ({"prompt": [[5, 6], []]}, "prompt[1] is empty"),
        ({"prompt": "hi", "logprobs": 99}, "logprobs"),
    ],
)
def test_bad_prompts_are_refused_with_a_sentence(served, body, says):
    server, _, _ = served
    reply = post(server, "/v1/completions", body)
    assert reply.status_code in (400, 422) and says in reply.json()["error"]["message"]
