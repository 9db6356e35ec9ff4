"""Function calling end to end: a tiny model trained on one tool-call row (LLaMA-Factory's sharegpt shape,
qwen template) is served, and the official `openai` client gets the call back as `tool_calls`."""

from __future__ import annotations

import json

import openai
import pytest

from tuneforge.config import GeneratingArguments, ModelArguments, load_config
from tuneforge.data.slots import slot_template
from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.server import BackgroundServer
from tuneforge.serve.tools import parse_tool_calls
from tuneforge.train.stages import run_stage

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_each_format_reads_back_what_it_writes():
    for name in ("qwen", "llama3", "mistral", "glm4", "default"):
        template = slot_template(name)
        text = "".join(p for p in template._call_pieces_text([CALL]))
        calls = parse_tool_calls(template, text)
        assert calls and calls[0]["function"]["name"] == "get_weather", name
        assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert parse_tool_calls(slot_template("qwen"), "Paris is sunny.") is None


@pytest.fixture(scope="module")
def trained(smollm2_tokenizer, tmp_path_factory):
    from tests.helpers import tiny_llama

    root = tmp_path_factory.mktemp("tools")
    tiny_model_dir = root / "tiny"  # a context long enough for the tools prompt and a second turn
    tiny = tiny_llama(
        len(smollm2_tokenizer), pad_token_id=smollm2_tokenizer.pad_token_id, max_position_embeddings=1024
    )
    tiny.save_pretrained(tiny_model_dir)
    smollm2_tokenizer.save_pretrained(tiny_model_dir)
    row = {
        "conversations": [
            {"from": "human", "value": "What is the weather in Paris?"},
            {"from": "function_call", "value": json.dumps(CALL)},
            {"from": "observation", "value": json.dumps({"temp": 21})},
            {"from": "gpt", "value": "It is 21 degrees."},
        ],
        "tools": json.dumps([t["function"] for t in TOOLS]),
    }
    (root / "calls.json").write_text(json.dumps([row] * 16))
    info = {
        "calls": {
            "file_name": "calls.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "tools": "tools"},
        }
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    keys = {
        "model_name_or_path": str(tiny_model_dir), "dataset": "calls", "dataset_dir": str(root), "template": "qwen",
        "finetuning_type": "full", "output_dir": str(root / "out"), "cutoff_len": 512, "max_steps": 100,
        "per_device_train_batch_size": 4, "learning_rate": 1e-2, "lr_scheduler_type": "constant",
    }  # fmt: skip
    return run_stage(load_config(extra=keys))


def test_openai_client_gets_tool_calls(trained):
    engine = InferenceEngine(
        ModelArguments(model_name_or_path=str(trained)),
        GeneratingArguments(do_sample=False, max_new_tokens=48),
        "qwen",
    )
    try:
        with BackgroundServer(engine) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
            question = [{"role": "user", "content": "What is the weather in Paris?"}]
            answer = client.chat.completions.create(model="", messages=question, tools=TOOLS)
            choice = answer.choices[0]
            assert choice.finish_reason == "tool_calls", choice.message.content
            (call,) = choice.message.tool_calls
            assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
                "city": "Paris"
            }
            # the result goes back as a tool message; the model answers in words
            follow = [
                *question,
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21})},
            ]
            final = client.chat.completions.create(model="", messages=follow, tools=TOOLS)
            assert final.choices[0].finish_reason == "stop"
            assert "21" in final.choices[0].message.content
            streamed = client.chat.completions.create(model="", messages=question, tools=TOOLS, stream=True)
            deltas = [c.choices[0].delta for c in streamed if c.choices]
            assert any(d.tool_calls for d in deltas)
    finally:
        engine.close()
