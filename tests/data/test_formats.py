import json

import pytest

from tuneforge.config import DataArguments
from tuneforge.data.conversation import DataError
from tuneforge.data.loader import load_conversations


def make(tmp_path, rows, entry, name="d", suffix=".json"):
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({name: {"file_name": path.name, **entry}}), encoding="utf-8"
    )
    return DataArguments(dataset=[name], dataset_dir=str(tmp_path))


def test_alpaca_with_input_system_and_history(tmp_path):
    rows = [{"instruction": "Sum", "input": "2 2", "output": "4", "system": "S", "history": [["q0", "a0"]]}]
    args = make(
        tmp_path,
        rows,
        {
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history",
            }
        },
    )
    (conv,) = load_conversations(args)
    assert conv.system == "S"
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "q0"),
        ("assistant", "a0"),
        ("user", "Sum\n2 2"),
        ("assistant", "4"),
    ]


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
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    (conv,) = load_conversations(make(tmp_path, rows, entry, suffix=".jsonl"))
    assert conv.system == "S" and [m.content for m in conv.messages] == ["hi", "yo"]


@pytest.mark.parametrize(
    ("rows", "entry", "needle"),
    [
        ([{"instruction": "q"}], {}, "field 'output' is missing or null"),
        ([{"instruction": "q", "output": 3}], {}, "field 'output' should be text, got int"),
        ([{"instruction": "q", "output": "  "}], {}, "turn 2 (assistant) is empty"),
        ([{"conversations": [{"from": "bot", "value": "x"}]}], {"formatting": "sharegpt"}, "has role 'bot'"),
        (
            [{"conversations": [{"from": "human", "value": "x"}]}],
            {"formatting": "sharegpt"},
            "ends with a user turn",
        ),
        (
            [{"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}],
            {"formatting": "sharegpt"},
            "turn 1 is from 'assistant' but 'user' was expected",
        ),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, rows, entry, needle):
    good = (
        {"conversations": [{"from": "human", "value": "ok"}, {"from": "gpt", "value": "ok"}]}
        if entry.get("formatting") == "sharegpt"
        else {"instruction": "ok", "output": "ok"}
    )
    with pytest.raises(DataError) as err:
        load_conversations(make(tmp_path, [good, *rows], entry))
    assert "d.json:row 2:" in str(err.value)
    assert needle in str(err.value)


def test_malformed_jsonl_reports_line_and_column(tmp_path):
    args = make(tmp_path, [{"instruction": "a", "output": "b"}], {}, suffix=".jsonl")
    path = tmp_path / "d.jsonl"
    path.write_text(path.read_text() + '{"instruction": "x", "output": }\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:2:\d+: invalid JSON"):
        load_conversations(args)


def test_unknown_dataset_lists_known(tmp_path):
    make(tmp_path, [], {}, name="alpha")
    with pytest.raises(DataError, match="known datasets: alpha"):
        load_conversations(DataArguments(dataset=["beta"], dataset_dir=str(tmp_path)))


def test_max_samples_limits_each_dataset(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    args = make(tmp_path, rows, {})
    assert len(load_conversations(args.model_copy(update={"max_samples": 3}))) == 3
