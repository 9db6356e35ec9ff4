import csv
import json
import shutil

from tuneforge.config import DataArguments
from tuneforge.data.conversation import Conversation, Document
from tuneforge.data.loader import load_examples


def make(tmp_path, rows, entry, name="d", suffix=".json"):
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info_path = tmp_path / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {"file_name": path.name, **entry}
    info_path.write_text(json.dumps(info), encoding="utf-8")
    return DataArguments(dataset=[name], dataset_dir=str(tmp_path))


def turns(conv: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conv.messages]


def test_alpaca_with_input_system_and_history(tmp_path):
    rows = [{"instruction": "Sum", "input": "2 2", "output": "4", "system": "S", "history": [["q0", "a0"]]}]
    columns = {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "system": "system",
        "history": "history",
    }
    (conv,) = load_examples(make(tmp_path, rows, {"columns": columns})).examples
    assert conv.system == "S"
    assert turns(conv) == [("user", "q0"), ("assistant", "a0"), ("user", "Sum\n2 2"), ("assistant", "4")]


def test_sharegpt_with_custom_tags_and_system_turn(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
            ]
        }
    ]
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    entry = {"formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}
    (conv,) = load_examples(make(tmp_path, rows, entry, suffix=".jsonl")).examples
    assert conv.system == "S" and turns(conv) == [("user", "hi"), ("assistant", "yo")]


def test_openai_messages_with_tool_calls(tmp_path):
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "18C, sunny"},
                {"role": "assistant", "content": "It is 18C and sunny."},
            ],
            "tools": [{"type": "function", "function": {"name": "weather"}}],
        }
    ]
    (conv,) = load_examples(make(tmp_path, rows, {"formatting": "openai"})).examples
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.messages[1].tool_calls == (call,)
    assert conv.as_chat()[1]["tool_calls"] == [call]
    assert json.loads(conv.tools)[0]["function"]["name"] == "weather"


def test_preference_rows_in_all_three_formats(tmp_path):
    alpaca = make(
        tmp_path, [{"instruction": "q", "chosen": "good", "rejected": "bad"}], {"ranking": True}, "a"
    )
    sharegpt = make(
        tmp_path,
        [
            {
                "conversations": [{"from": "human", "value": "q"}],
                "chosen": {"from": "gpt", "value": "good"},
                "rejected": {"from": "gpt", "value": "bad"},
            }
        ],
        {
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
        "s",
    )
    openai = make(
        tmp_path,
        [
            {
                "messages": [{"role": "user", "content": "q"}],
                "chosen": {"role": "assistant", "content": "good"},
                "rejected": {"role": "assistant", "content": "bad"},
            }
        ],
        {"formatting": "openai", "ranking": True},
        "o",
    )
    for args in (alpaca, sharegpt, openai):
        (conv,) = load_examples(args).examples
        assert turns(conv) == [("user", "q"), ("assistant", "good")]
        assert conv.rejected.content == "bad"


def test_kto_tag_and_pretraining_text(tmp_path):
    kto = make(
        tmp_path,
        [
            {"instruction": "q", "output": "a", "label": True},
            {"instruction": "q", "output": "b", "label": "false"},
        ],
        {"columns": {"prompt": "instruction", "response": "output", "kto_tag": "label"}},
        "k",
    )
    assert [c.kto_label for c in load_examples(kto).examples] == [True, False]
    text = make(tmp_path, [{"text": "Once upon a time."}], {"columns": {"prompt": "text"}}, "t")
    (doc,) = load_examples(text).examples
    assert isinstance(doc, Document) and doc.text == "Once upon a time."


def test_csv_and_parquet_files(tmp_path):
    rows = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]
    for suffix in (".csv", ".parquet"):
        loaded = load_examples(make(tmp_path, rows, {}, name=f"x{suffix[1:]}", suffix=suffix))
        assert [turns(c)[1][1] for c in loaded.examples] == ["a1", "a2"]
    assert (
        load_examples(make(tmp_path, rows, {}, name="c", suffix=".csv"))
        .examples[1]
        .source.endswith("c.csv:3")
    )


def test_folder_of_files_and_several_datasets_in_order(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "b.jsonl").write_text(json.dumps({"instruction": "q", "output": "second"}) + "\n")
    (folder / "a.json").write_text(json.dumps([{"instruction": "q", "output": "first"}]))
    (folder / "notes.txt").write_text("ignored")
    make(tmp_path, [{"instruction": "q", "output": "third"}], {}, name="other")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    info["parts"] = {"file_name": "parts"}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    loaded = load_examples(DataArguments(dataset=["parts", "other"], dataset_dir=str(tmp_path)))
    assert [c.messages[1].content for c in loaded.examples] == ["first", "second", "third"]


def test_max_samples_and_num_samples_limit_each_dataset(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    args = make(tmp_path, rows, {})
    assert len(load_examples(args.model_copy(update={"max_samples": 3})).examples) == 3
    args = make(tmp_path, rows, {"num_samples": 4}, name="n")
    assert len(load_examples(args).examples) == 4
    # streaming reads through the same reader, so it honours both limits too
    from tuneforge.data.streaming import iter_conversations

    assert len(list(iter_conversations(args, print))) == 4
    assert len(list(iter_conversations(args.model_copy(update={"max_samples": 2}), print))) == 2


def two_datasets(tmp_path, **extra) -> DataArguments:
    make(tmp_path, [{"instruction": "q", "output": f"a{i}"} for i in range(6)], {}, name="big")
    make(tmp_path, [{"instruction": "q", "output": f"b{i}"} for i in range(2)], {}, name="small")
    return DataArguments(dataset=["big", "small"], dataset_dir=str(tmp_path), **extra)


def answers(args: DataArguments) -> list[str]:
    return [c.messages[-1].content for c in load_examples(args).examples]


def test_mix_strategies(tmp_path):
    assert answers(two_datasets(tmp_path)) == ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1"]
    under = answers(two_datasets(tmp_path, mix_strategy="interleave_under"))
    assert under == ["a0", "b0", "a1", "b1"]  # round robin until the small one runs out
    over = answers(two_datasets(tmp_path, mix_strategy="interleave_over"))
    assert sorted(set(over)) == ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1"] and len(over) == 12
    weighted = answers(two_datasets(tmp_path, mix_strategy="interleave_over", interleave_probs="0.9,0.1"))
    assert sum(a.startswith("a") for a in weighted) > 3 * sum(a.startswith("b") for a in weighted)


def test_interleave_probs_are_checked():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs mix_strategy"):
        DataArguments(dataset="a,b", interleave_probs="0.5,0.5")
    with pytest.raises(ValidationError, match="2 values for 3 datasets"):
        DataArguments(dataset="a,b,c", mix_strategy="interleave_under", interleave_probs="0.5,0.5")
    with pytest.raises(ValidationError, match="sum to 1"):
        DataArguments(dataset="a,b", mix_strategy="interleave_under", interleave_probs="0.5,0.6")


def test_worker_processes_give_the_same_tokens(tmp_path, smollm2_tokenizer):
    from tuneforge.data import dataset

    rows = [{"instruction": f"question {i}", "output": f"answer {i} " * (i % 7 + 1)} for i in range(2100)]
    args = make(tmp_path, rows, {})
    one = dataset.build_sft_data(args, smollm2_tokenizer)
    two = dataset.build_sft_data(args.model_copy(update={"preprocessing_num_workers": 2}), smollm2_tokenizer)
    assert len(one.train) == 2100
    assert [(e.input_ids, e.labels, e.source) for e in one.train] == [
        (e.input_ids, e.labels, e.source) for e in two.train
    ]


def test_tokenized_cache_is_reused_until_data_or_settings_change(tmp_path, smollm2_tokenizer, monkeypatch):
    import os

    from tuneforge.data import dataset

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    args = make(tmp_path, [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": "b"}], {})
    calls = []
    real = dataset.tokenize_conversations
    monkeypatch.setattr(dataset, "tokenize_conversations", lambda *a: calls.append(1) or real(*a))
    first = dataset.build_sft_data(args, smollm2_tokenizer)
    again = dataset.build_sft_data(args, smollm2_tokenizer)
    assert len(calls) == 1
    assert [(e.input_ids, e.labels, e.source) for e in first.train] == [
        (e.input_ids, e.labels, e.source) for e in again.train
    ]
    dataset.build_sft_data(args.model_copy(update={"cutoff_len": 64}), smollm2_tokenizer)
    assert len(calls) == 2  # another cutoff, another key
    dataset.build_sft_data(args.model_copy(update={"overwrite_cache": True}), smollm2_tokenizer)
    assert len(calls) == 3
    data_file = tmp_path / "d.json"
    data_file.write_text(json.dumps([{"instruction": "q", "output": "changed"}]))
    os.utime(data_file, ns=(1, 1))
    changed = dataset.build_sft_data(args, smollm2_tokenizer)
    assert len(calls) == 4 and len(changed.train) == 1
    assert not list((tmp_path / "home" / "cache" / "tokenized").glob("*.partial-*"))


def test_a_cache_written_by_another_run_meanwhile_is_kept(tmp_path, smollm2_tokenizer, monkeypatch):
    """Two runs of the same data tokenizing at once: the one renaming second finds the folder taken (rename
    fails on a non-empty folder) and keeps the other's copy instead of failing."""
    from pathlib import Path

    from tuneforge.data import cache, dataset

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    args = make(tmp_path, [{"instruction": "q", "output": "a"}], {})
    first = dataset.build_sft_data(args, smollm2_tokenizer)
    (target,) = (tmp_path / "home" / "cache" / "tokenized").iterdir()
    rename = Path.rename

    def other_run_first(self, to):  # the other run's copy lands between our rmtree and our rename
        shutil.copytree(self, to)
        return rename(self, to)

    monkeypatch.setattr(Path, "rename", other_run_first)
    again = dataset.build_sft_data(args.model_copy(update={"overwrite_cache": True}), smollm2_tokenizer)
    assert [e.input_ids for e in again.train] == [e.input_ids for e in first.train]
    assert cache.load(target.name) is not None
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no partial folder left
