"""One test per category of bad input, driven by the files in tests/data/corpus/."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.config import DataArguments
from tuneforge.data.conversation import DataError
from tuneforge.data.loader import BadRowsError, load_examples
from tuneforge.data.validate import validate_data

CORPUS = Path(__file__).parent / "corpus"


def args(dataset: str, **extra) -> DataArguments:
    return DataArguments(dataset=[dataset], dataset_dir=str(CORPUS), **extra)


# dataset, category, where (file:line of the bad row), words the message must contain
ROW_PROBLEMS = [
    ("missing_field", "missing_field", "missing_field.json:3", "field 'output' is missing or null"),
    ("null_field", "missing_field", "null_field.json:3", "field 'output' is missing or null"),
    ("mixed_types", "wrong_type", "mixed_types.json:3", "field 'output' should be text, got int"),
    ("empty_response", "empty", "empty_response.json:3", "turn 2 (assistant) is empty or only whitespace"),
    (
        "unknown_role",
        "unknown_role",
        "unknown_role.json:3",
        "turn 2 has role 'bot'; expected one of 'human', 'gpt'",
    ),
    ("wrong_turn_order", "turn_order", "wrong_turn_order.json:3", "turn 1 is from 'assistant'"),
    ("odd_length", "turn_order", "odd_length.json:3", "ends with a user turn"),
    (
        "system_in_middle",
        "system_position",
        "system_in_middle.json:3",
        "a system message may only come first",
    ),
    ("malformed", "invalid_json", "malformed.jsonl:2:32", "invalid JSON (Expecting value)"),
    ("not_utf8", "not_utf8", "not_utf8.jsonl:2", "not UTF-8 (byte offset 63 in the file"),
]


@pytest.mark.parametrize(
    ("dataset", "category", "where", "words"), ROW_PROBLEMS, ids=[r[0] for r in ROW_PROBLEMS]
)
def test_bad_row_is_reported_with_place_and_reason(dataset, category, where, words):
    loaded = load_examples(args(dataset), on_bad_rows="skip")
    assert loaded.rows_read >= 2 and len(loaded.examples) == loaded.rows_read - 1  # good rows survive
    (problem,) = loaded.problems
    assert problem.category == category
    assert f"{CORPUS}/{where}" in problem.message and words in problem.message
    with pytest.raises(BadRowsError) as err:
        load_examples(args(dataset))
    assert f"1 of {loaded.rows_read} rows are bad" in str(err.value) and words in str(err.value)


FILE_PROBLEMS = [
    ("array_then_more", "array_then_more.json:4: more data after the closing ']'"),
    ("empty", "empty.json: the file is empty"),
    ("pretty_object", "the file is one JSON object spread over several lines"),
    ("missing_file", "no_such_file.json does not exist"),
    ("hub_only", "not in the datasets cache and offline mode is on"),
    ("bad_formatting", "formatting 'sharegtp' is unknown; use one of alpaca, openai, sharegpt"),
    ("no_such_dataset", "known datasets: array_as_jsonl, array_then_more"),
]


@pytest.mark.parametrize(("dataset", "words"), FILE_PROBLEMS, ids=[r[0] for r in FILE_PROBLEMS])
def test_bad_file_stops_with_a_clear_message(dataset, words):
    with pytest.raises(DataError) as err:
        load_examples(args(dataset), on_bad_rows="skip")
    assert words in str(err.value)


@pytest.mark.parametrize("dataset", ["bom", "jsonl_as_json", "array_as_jsonl"])
def test_bom_and_json_lines_array_mixups_are_read_by_content(dataset):
    loaded = load_examples(args(dataset))
    assert len(loaded.examples) == 2 and not loaded.problems


def test_special_tokens_in_prompts_are_warned_about(smollm2_tokenizer):
    report = validate_data(args("special_tokens"), smollm2_tokenizer)
    assert report.clean and report.special_token_rows == [f"{CORPUS}/special_tokens.json:3"]
    assert "special tokens written in prompt text" in report.render()


def test_row_far_longer_than_cutoff_is_counted_and_flagged(smollm2_tokenizer):
    # cut at the end, the prompt alone fills cutoff_len: no answer token is left
    report = validate_data(args("long_row", cutoff_len=512, truncation="end"), smollm2_tokenizer)
    assert report.truncated == 1
    assert [p.category for p in report.problems] == ["no_trainable_tokens"]
    assert max(report.lengths) < 512
    # shortened in proportion (LLaMA-Factory's policy, the default), the row keeps part of its answer
    kept = validate_data(args("long_row", cutoff_len=512), smollm2_tokenizer)
    assert kept.clean and kept.truncated == 1 and max(kept.lengths) <= 512
    roomy = validate_data(args("long_row", cutoff_len=8192), smollm2_tokenizer)
    assert roomy.clean and roomy.truncated == 0 and max(roomy.lengths) > 3000


def test_validate_command_lists_every_bad_row_and_exits_2(smollm2_dir):
    datasets = ",".join(r[0] for r in ROW_PROBLEMS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneforge",
            "data",
            "validate",
            "--dataset",
            datasets,
            "--dataset_dir",
            str(CORPUS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    rows = sum(load_examples(args(r[0]), on_bad_rows="skip").rows_read for r in ROW_PROBLEMS)
    assert f"read {rows} rows; {len(ROW_PROBLEMS)} bad" in result.stdout
    for _, category, where, _ in ROW_PROBLEMS:
        assert f"{CORPUS}/{where}" in result.stdout and f"[{category}]" in result.stdout
    assert "tokens per row after templating: p50" in result.stdout


def test_validate_command_exits_0_on_clean_data(smollm2_dir):
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "data", "validate", "examples/quickstart.yaml"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: no bad rows" in result.stdout


def test_a_large_json_lines_file_streams_with_bounded_memory_and_progress(tmp_path, monkeypatch, capsys):
    import json
    import tracemalloc

    from tuneforge.data import readers
    from tuneforge.data.streaming import iter_conversations

    row = json.dumps({"instruction": "q " * 40, "output": "a " * 200}) + "\n"
    path = tmp_path / "big.jsonl"
    with path.open("w") as fh:
        fh.writelines(row for _ in range(8000))  # about 5 MB
    (tmp_path / "dataset_info.json").write_text(json.dumps({"big": {"file_name": "big.jsonl"}}))
    monkeypatch.setattr(readers, "PROGRESS_BYTES", 1024**2)
    tracemalloc.start()
    count = sum(
        1 for _ in iter_conversations(DataArguments(dataset=["big"], dataset_dir=str(tmp_path)), print)
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 8000
    assert peak < path.stat().st_size / 4  # rows are read one line at a time, not the whole file
    assert "reading big.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"file_name": 123}, "file_name should be a file name or a list of them, got 123"),
        ({"file_name": ["a.json", None]}, "file_name should be a file name or a list"),
        (
            {"file_name": "a.json", "columns": ["instruction", "output"]},
            "columns should map names to column names",
        ),
        ({"file_name": "a.json", "tags": {"role_tag": 1}}, "tags should map names"),
        ({"file_name": "a.json", "num_samples": "ten"}, "num_samples should be a positive whole number"),
    ],
)
def test_dataset_info_fields_of_the_wrong_shape_are_named(tmp_path, entry, words):
    (tmp_path / "a.json").write_text('[{"instruction": "q", "output": "a"}]')
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": entry}))
    with pytest.raises(DataError, match=re.escape(words)):
        load_examples(DataArguments(dataset=["d"], dataset_dir=str(tmp_path)))


def write_dataset(tmp_path, name: str, text: str) -> DataArguments:
    (tmp_path / name).write_text(text)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": name}}))
    return DataArguments(dataset=["d"], dataset_dir=str(tmp_path))


def test_csv_with_an_unterminated_quote_is_named_where_it_opens(tmp_path):
    text = 'instruction,output\nq1,a1\nq2,"a2 never closed\nq3,a3\nq4,a4\n'
    with pytest.raises(DataError, match=r"d.csv:3: malformed CSV from this line on"):
        load_examples(write_dataset(tmp_path, "d.csv", text))


def test_csv_rows_with_too_many_or_too_few_fields_are_bad_rows(tmp_path):
    text = "instruction,output\nq1,a1\nq2,a2,extra\nq3\n"
    with pytest.raises(BadRowsError) as err:
        load_examples(write_dataset(tmp_path, "d.csv", text))
    messages = [p.message for p in err.value.problems]
    assert any("d.csv:3: the row has 3 fields, the header has 2" in m for m in messages)
    assert any("d.csv:4: the row has 1 fields, the header has 2" in m for m in messages)


def test_a_json_file_holding_one_object_is_not_taken_as_a_row(tmp_path):
    text = json.dumps({"instruction": ["q1", "q2"], "output": ["a1", "a2"]})
    with pytest.raises(DataError, match="the file is one JSON object, not rows"):
        load_examples(write_dataset(tmp_path, "d.json", text))


def test_rows_of_a_one_line_array_are_named_by_their_place_on_the_line(tmp_path):
    rows = [
        {"instruction": "q", "output": "a"},
        {"instruction": "q", "output": 5},
        {"instruction": "q", "output": "b"},
    ]
    with pytest.raises(BadRowsError) as err:
        load_examples(write_dataset(tmp_path, "d.json", json.dumps(rows)))
    (problem,) = err.value.problems
    assert problem.source.endswith("d.json:1 (item 2 on that line)")


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_json_nested_100k_deep_is_a_bad_row_not_a_recursion_error(tmp_path, name):
    deep = "[" * 100_000 + "]" * 100_000
    good = json.dumps({"instruction": "q", "output": "a"})
    text = f"{good}\n{deep}\n" if name.endswith("l") else f"[{good},\n{deep}]"
    with pytest.raises(DataError, match="nested deeper than it can be read"):
        load_examples(write_dataset(tmp_path, name, text))


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_a_20_mb_row_is_read_the_same_by_validate_training_and_streaming(tmp_path, name):
    from tuneforge.data.loader import dataset_spec, raw_rows

    small = {"instruction": "q", "output": "a"}
    huge = {"instruction": "x " * 10_000_000, "output": "y"}  # one 20 MB line
    rows = [small, huge, small]
    text = "".join(json.dumps(r) + "\n" for r in rows) if name.endswith("l") else json.dumps(rows, indent=1)
    data = write_dataset(tmp_path, name, text)
    validating = load_examples(data, on_bad_rows="skip")  # what `tuneforge data validate` reads
    training = load_examples(data)  # what training reads (bad rows would stop it)
    assert validating.problems == [] and validating.rows_read == training.rows_read == 3
    assert len(training.examples) == 3
    streamed = list(raw_rows(dataset_spec("d", tmp_path), tmp_path, streaming=True))
    assert len(streamed) == 3 and len(streamed[1].value["instruction"]) == 20_000_000
