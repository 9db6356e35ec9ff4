"""JSON arrays are read in chunks: rows, line numbers and error positions must not depend on where chunks end."""

import json

import pytest

from tuneforge.data import readers
from tuneforge.data.conversation import DataError
from tuneforge.data.readers import iter_rows

ROWS = [
    {"instruction": "写一首诗", "output": "春眠不觉晓 🌸"},
    {"instruction": "multi\nline", "output": "ok", "history": [["a", "b"]]},
    {"instruction": "last", "output": "é" * 30},
]


def read(path, chunk: int):
    readers._ArrayText.CHUNK = chunk
    try:
        return [(r.source.rsplit(":", 1)[1], r.value) for r in iter_rows(path)]
    finally:
        readers._ArrayText.CHUNK = 4 * 1024**2


def error(path, chunk: int) -> str:
    readers._ArrayText.CHUNK = chunk
    try:
        with pytest.raises(DataError) as err:
            list(iter_rows(path))
        return str(err.value)
    finally:
        readers._ArrayText.CHUNK = 4 * 1024**2


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_rows_and_lines_do_not_depend_on_chunk_size(tmp_path, chunk):
    path = tmp_path / "rows.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS, ensure_ascii=False, indent=2).encode())
    whole = read(path, 1 << 30)
    assert [v for _, v in whole] == ROWS
    assert [line for line, _ in whole] == ["2", "6", "16"]
    assert read(path, chunk) == whole


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_error_positions_do_not_depend_on_chunk_size(tmp_path, chunk):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"instruction": "q", "output": "a"},\n  {"instruction": "q",, "output": "a"}\n]')
    assert error(bad, chunk) == error(bad, 1 << 30)
    assert "bad.json:3:23: invalid JSON (Expecting property name" in error(bad, chunk)

    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[\n{"instruction": "caf\xe9", "output": "a"}\n]')
    assert "latin.json:2: not UTF-8 (byte offset 22 in the file" in error(latin, chunk)

    open_ended = tmp_path / "open.json"
    open_ended.write_text('[\n{"instruction": "q", "output": "a"},\n')
    assert "open.json:3: the JSON array is not closed" in error(open_ended, chunk)


def test_a_large_json_array_is_read_with_bounded_memory_and_progress(tmp_path, monkeypatch, capsys):
    import tracemalloc

    row = json.dumps({"instruction": "q " * 40, "output": "a " * 200})
    path = tmp_path / "big.json"
    path.write_text("[\n" + ",\n".join(row for _ in range(8000)) + "\n]\n")  # about 5 MB
    monkeypatch.setattr(readers, "PROGRESS_BYTES", 1024**2)
    monkeypatch.setattr(readers._ArrayText, "CHUNK", 64 * 1024)
    tracemalloc.start()
    count = sum(1 for _ in iter_rows(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 8000
    assert peak < path.stat().st_size / 4  # a chunk and a row at a time, not the whole file
    assert "reading big.json" in capsys.readouterr().err


def test_csv_bad_bytes_are_named_by_line_and_offset_and_big_files_show_progress(
    tmp_path, monkeypatch, capsys
):
    bad = tmp_path / "rows.csv"
    bad.write_bytes(b'\xef\xbb\xbfinstruction,output\nq,"two\nlines"\nq,caf\xe9\n')
    with pytest.raises(DataError) as err:
        list(iter_rows(bad))
    assert "rows.csv:4: not UTF-8 (byte offset 41 in the file" in str(err.value)
    good = tmp_path / "good.csv"
    good.write_text("instruction,output\n" + 'q,"a\nb"\n' * 40_000)  # 320 kB
    monkeypatch.setattr(readers, "PROGRESS_BYTES", 100_000)
    read_rows = list(iter_rows(good))
    assert len(read_rows) == 40_000 and read_rows[1].value == {"instruction": "q", "output": "a\nb"}
    assert read_rows[1].source.endswith("good.csv:5")  # the line where the row ends, as csv counts
    assert "reading good.csv" in capsys.readouterr().err


def test_big_parquet_files_show_progress(tmp_path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"instruction": [f"q{i}" for i in range(5000)], "output": ["a"] * 5000}), path)
    monkeypatch.setattr(readers, "PROGRESS_BYTES", 1000)
    read_rows = list(iter_rows(path))
    assert len(read_rows) == 5000 and read_rows[-1].source.endswith("rows.parquet:row 5000")
    assert "reading rows.parquet" in capsys.readouterr().err
