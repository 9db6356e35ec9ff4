"""LLaMA-Factory's demo data, unchanged, loads as LLaMA-Factory loads it: every local dataset of its
dataset_info.json validates at its cutoff (2048), tool-call rows render the template's tool format and
train the calls, image and video rows train on a vision-language model and audio rows on an audio-language one
(rows with both a video and a sound, for omni models, are refused naming the row), and a text model refuses
them all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config import DataArguments
from tuneforge.data.dataset import build_sft_data
from tuneforge.data.validate import validate_data

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "llamafactory" / "data"
INFO = json.loads((DATA / "dataset_info.json").read_text(encoding="utf-8"))
LOCAL = sorted(
    name for name, entry in INFO.items() if "file_name" in entry and not entry["file_name"].endswith(".yaml")
)
MEDIA = {name for name in LOCAL if {"images", "videos", "audios"} & set(INFO[name].get("columns", {}))}
# the model each kind of demo row is read by; rows with both a video and a sound fit none of them
READER = {"images": "qwen2_vl", "videos": "qwen2_vl", "audios": "qwen2_audio"}


@pytest.mark.parametrize("name", LOCAL)
def test_demo_dataset_validates_at_its_cutoff(name, smollm2_tokenizer, tiny_vision_model):
    from tuneforge.data.conversation import DataError

    args = DataArguments(dataset=[name], dataset_dir=str(DATA), cutoff_len=2048, template="qwen3_nothink")
    tokenizer, family = smollm2_tokenizer, None
    if name in MEDIA:
        from tests.data.test_visual import bound

        with pytest.raises(DataError, match=r"rows have .*\.json:\d+.*text-only model"):
            validate_data(args, smollm2_tokenizer)
        kinds = {"images", "videos", "audios"} & set(INFO[name]["columns"])
        tokenizer, family = bound(tiny_vision_model(READER[sorted(kinds)[0]]), args)
        if kinds == {"videos", "audios"}:
            with pytest.raises(
                DataError, match=r"\.json:\d+: the row has video input, and model type 'qwen2_audio'"
            ):
                validate_data(args, tokenizer, family)
            return
    report = validate_data(args, tokenizer, family)
    assert report.clean, report.render()
    assert report.rows_read > 0


def trained(tokenizer, example) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    )


def test_glaive_tool_rows_put_tools_in_the_system_prompt_and_train_the_calls(smollm2_tokenizer):
    args = DataArguments(
        dataset=["glaive_toolcall_en_demo"],
        dataset_dir=str(DATA),
        cutoff_len=4096,
        template="qwen",
        max_samples=20,
    )
    data = build_sft_data(args, smollm2_tokenizer)
    examples = list(data.train)
    texts = [smollm2_tokenizer.decode(e.input_ids) for e in examples]
    with_tools = [i for i, t in enumerate(texts) if "<tools>" in t]
    assert with_tools, "no row rendered its tools"
    calls = [i for i in with_tools if "<tool_call>" in trained(smollm2_tokenizer, examples[i])]
    assert calls, "no function call was trained"
    for i in calls:
        text = trained(smollm2_tokenizer, examples[i])
        assert '<tool_call>\n{"name": ' in text and "</tool_call><|im_end|>" in text
        assert "<tool_response>" not in text  # tool results are prompt, never trained
        assert "# Tools" not in text


def test_tokenizer_own_template_gets_tools_and_calls(tmp_path, smollm2_tokenizer):
    """Without `template:`, tools and calls go to the tokenizer's Jinja as apply_chat_template passes them."""
    jinja = (
        "{% if tools %}TOOLS:{{ tools | map(attribute='name') | join(',') }}\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% for c in m.get('tool_calls', []) %}CALL {{ c['function']['name'] }}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = smollm2_tokenizer.__class__.from_pretrained(smollm2_tokenizer.name_or_path)
    tokenizer.chat_template = jinja
    args = DataArguments(
        dataset=["glaive_toolcall_en_demo"], dataset_dir=str(DATA), cutoff_len=4096, max_samples=20
    )
    examples = list(build_sft_data(args, tokenizer).train)
    texts = [tokenizer.decode(e.input_ids) for e in examples]
    assert any(t.startswith("TOOLS:") for t in texts)
    assert any("CALL " in trained(tokenizer, e) for e in examples)


def test_text_file_rows_load_for_pretraining_and_preview_shows_them(smollm2_tokenizer, capsys):
    from tuneforge.cli.main import main
    from tuneforge.data.validate import preview_rows

    args = DataArguments(dataset=["wiki_demo"], dataset_dir=str(DATA), cutoff_len=64)
    shown = preview_rows(args, smollm2_tokenizer, rows=2)
    assert len(shown.rows) == 2 and all(e.labels == e.input_ids for e in shown.rows)  # every token trained
    assert shown.rows[0].source.endswith("wiki_demo.txt:1")
    model = str(Path(smollm2_tokenizer.name_or_path))
    assert main(["data", "preview", "--dataset", "wiki_demo", "--dataset_dir", str(DATA), "--rows", "1",
                 "--model_name_or_path", model, "--cutoff_len", "32"]) == 0  # fmt: skip
    assert "wiki_demo.txt:1" in capsys.readouterr().out
    assert main(["data", "validate", "--help"]) == 0 and "usage" in capsys.readouterr().out


def test_preference_and_kto_demo_rows_all_kept_at_a_short_cutoff(smollm2_tokenizer):
    """Shortened in proportion, no pair loses its answers (cut at the end, 134 of 300 pairs were dropped)."""
    from tuneforge.data.preference import build_kto_data, build_pair_data

    pairs = build_pair_data(
        DataArguments(dataset=["dpo_en_demo"], dataset_dir=str(DATA), cutoff_len=256), smollm2_tokenizer
    )
    assert not pairs.dropped and len(pairs.train) == 300
    assert max(len(r["chosen_input_ids"]) for r in pairs.train) <= 256
    kto = build_kto_data(
        DataArguments(dataset=["kto_en_demo"], dataset_dir=str(DATA), cutoff_len=256), smollm2_tokenizer
    )
    assert not kto.dropped and len(kto.train) == 300
