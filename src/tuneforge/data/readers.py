"""Read rows from json, jsonl, csv, parquet and txt files, keeping `file:line` for every row.

A problem confined to one row (a malformed JSON line, bad bytes on a line) is yielded as that
row's error so the caller can report or skip it; a problem with the whole file raises `DataError`.
JSON lines and CSV are read a line at a time, JSON arrays an element at a time from chunks and
parquet a batch at a time, so memory does not grow with the file; files over 32 MB show a progress
bar.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.conversation import DataError

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")
BOM = b"\xef\xbb\xbf"
TOO_DEEP = "the JSON is nested deeper than it can be read (hundreds of levels); no dataset row needs that"
PROGRESS_BYTES = 32 * 1024**2


@dataclass
class RawRow:
    source: str
    value: Any = None
    error: DataError | None = None


def data_files(base: Path, names: str | list[str]) -> list[Path]:
    """The files of one dataset: `file_name` may be a file, a folder of data files, or a list of either."""
    files: list[Path] = []
    for name in [names] if isinstance(names, str) else names:
        path = base / name
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if any(p.suffix != ".txt" for p in found):  # notes beside structured data are not rows
                found = [p for p in found if p.suffix != ".txt"]
            if not found:
                raise DataError(f"folder {path} holds no {', '.join(SUFFIXES)} files", "missing_file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(
                f"data file {path} does not exist (file_name is relative to dataset_dir)", "missing_file"
            )
    return files


def iter_rows(path: Path) -> Iterator[RawRow]:
    if path.suffix == ".csv":
        yield from _csv_rows(path)
    elif path.suffix == ".parquet":
        yield from _parquet_rows(path)
    elif path.suffix in (".json", ".jsonl"):
        first = _first_byte(path)
        yield from (_json_array_rows(path) if first == b"[" else _json_lines_rows(path))
    elif path.suffix == ".txt":
        yield from _text_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}", "file_type")


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        head = fh.read(4096).removeprefix(BOM)
    stripped = head.lstrip()
    if not stripped:
        raise DataError(f"{path}: the file is empty", "empty")
    return stripped[:1]


def _undecodable(
    path: Path, data: bytes, err: UnicodeDecodeError, base_offset: int = 0, first_line: int = 1
) -> DataError:
    line = first_line + data.count(b"\n", 0, err.start)
    return DataError(
        f"{path}:{line}: not UTF-8 (byte offset {base_offset + err.start} in the file, "
        f"bytes {data[err.start : err.start + 4]!r}); re-encode the file as UTF-8",
        "not_utf8",
    )


_SEPARATORS = re.compile(r"[ \t\r\n,]*")


class _ArrayText:
    """A JSON array file decoded incrementally. `text[pos:]` is the unread part (at most a few chunks) and
    `line`/`col` the position of `pos` in the file, so memory does not grow with the file and the
    positions in messages are exact wherever the chunks end."""

    CHUNK = 4 * 1024**2

    def __init__(self, path: Path, fh: Any):
        self.path, self.fh = path, fh
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos, self.line, self.col = "", 0, 1, 1
        self.bytes_read, self.eof, self.at_start = 0, False, True
        self.progress = _progress(path, path.stat().st_size)

    def more(self) -> bool:
        """Append the next chunk (dropping what was read); False at the end of the file."""
        if self.eof:
            return False
        data = self.fh.read(self.CHUNK)
        pending = self.decoder.getstate()[0]  # the start of a character cut off by the previous chunk
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:
            line = self.line + self.text.count("\n", self.pos)
            raise _undecodable(self.path, pending + data, err, self.bytes_read - len(pending), line) from None
        if self.at_start and text:
            text, self.at_start = text.removeprefix("\ufeff"), False  # a byte order mark
        if data:  # positions into text stay valid after the last read, for the caller's error message
            self.text, self.pos = self.text[self.pos :] + text, 0
        self.bytes_read += len(data)
        if self.progress:
            self.progress.update(len(data))
        self.eof = not data
        return bool(data)

    def where(self, at: int) -> tuple[int, int]:
        """File line and column of `text[at]`."""
        newlines = self.text.count("\n", self.pos, at)
        if not newlines:
            return self.line, self.col + at - self.pos
        return self.line + newlines, at - self.text.rfind("\n", self.pos, at)

    def advance(self, to: int) -> None:
        self.line, self.col = self.where(to)
        self.pos = to

    def skip_separators(self) -> bool:
        """Move past whitespace and commas; False when the file ends first."""
        while True:
            self.advance(_SEPARATORS.match(self.text, self.pos).end())
            if self.pos < len(self.text) or not self.more():
                return self.pos < len(self.text)

    def close(self) -> None:
        if self.progress:
            self.progress.close()


def _json_array_rows(path: Path) -> Iterator[RawRow]:
    """A JSON array, one element at a time (so its line is known), read in chunks (so memory stays bounded)."""
    decoder = json.JSONDecoder()
    with path.open("rb") as fh:
        reader = _ArrayText(path, fh)
        try:
            reader.skip_separators()
            reader.advance(reader.text.index("[", reader.pos) + 1)
            last_line, item = 0, 0
            while True:
                if not reader.skip_separators():
                    raise DataError(
                        f"{path}:{reader.line}: the JSON array is not closed with ']'", "invalid_json"
                    )
                if reader.text[reader.pos] == "]":
                    break
                while True:
                    try:
                        value, end = decoder.raw_decode(reader.text, reader.pos)
                        break
                    except RecursionError:
                        raise DataError(f"{path}:{reader.line}: {TOO_DEEP}", "invalid_json") from None
                    except json.JSONDecodeError as err:
                        if reader.more():  # maybe only cut off at the end of the chunk
                            continue
                        line, col = reader.where(err.pos)
                        raise DataError(
                            f"{path}:{line}:{col}: invalid JSON ({err.msg})", "invalid_json"
                        ) from None
                # several rows on one line (a minified array): each is named by its place on that line
                item = item + 1 if reader.line == last_line else 1
                place = f" (item {item} on that line)" if item > 1 else ""
                yield RawRow(f"{path}:{reader.line}{place}", value)
                last_line = reader.line
                reader.advance(end)
            reader.advance(reader.pos + 1)
            while not reader.text[reader.pos :].strip() and reader.more():
                pass
            rest = reader.text[reader.pos :]
            if rest.strip():
                line, _ = reader.where(reader.pos + len(rest) - len(rest.lstrip()))
                raise DataError(
                    f"{path}:{line}: more data after the closing ']' of the JSON array; a file holds either one "
                    "JSON array or one JSON object per line (JSON lines), not both",
                    "invalid_json",
                )
        finally:
            reader.close()


def _raw_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, file offset of the line's first byte, the line's bytes) with a leading BOM dropped;
    a progress bar over 32 MB."""
    progress = _progress(path, path.stat().st_size)
    offset = 0
    try:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                start, offset = offset, offset + len(raw)
                if progress:
                    progress.update(len(raw))
                if lineno == 1 and raw.startswith(BOM):
                    raw, start = raw[len(BOM) :], start + len(BOM)
                yield lineno, start, raw
    finally:
        if progress:
            progress.close()


def _json_lines_rows(path: Path) -> Iterator[RawRow]:
    rows = _json_line_values(path)
    first = next(rows, None)
    if first is None:
        return
    second = next(rows, None)
    if second is None and path.suffix == ".json" and isinstance(first.value, dict):
        raise DataError(
            f"{path}: the file is one JSON object, not rows; a .json data file holds an array of rows "
            "([{...}, {...}]); a file of one object per line is JSON lines (name it .jsonl)",
            "invalid_json",
        )
    yield first
    if second is not None:
        yield second
        yield from rows


def _json_line_values(path: Path) -> Iterator[RawRow]:
    seen_row = False
    for lineno, start, raw in _raw_lines(path):
        if not raw.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield RawRow(source, error=_undecodable(path, raw, err, start, lineno))
            continue
        except RecursionError:
            yield RawRow(source, error=DataError(f"{source}: {TOO_DEEP}", "invalid_json"))
            continue
        except json.JSONDecodeError as err:
            if not seen_row:
                _reject_single_document(path, path.stat().st_size)
            message = f"{path}:{lineno}:{err.colno}: invalid JSON ({err.msg})"
            yield RawRow(source, error=DataError(message, "invalid_json"))
            seen_row = True
            continue
        seen_row = True
        yield RawRow(source, value)


def _text_rows(path: Path) -> Iterator[RawRow]:
    """Plain text as LLaMA-Factory reads it: each non-blank line is a row `{"text": line}`."""
    for lineno, start, raw in _raw_lines(path):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            yield RawRow(f"{path}:{lineno}", error=_undecodable(path, raw, err, start, lineno))
            continue
        if line.strip():
            yield RawRow(f"{path}:{lineno}", {"text": line})


def _reject_single_document(path: Path, size: int) -> None:
    """The first line is not JSON: if the whole file is one JSON object (pretty-printed), say so once."""
    if size > PROGRESS_BYTES:
        return
    try:
        value = json.loads(path.read_bytes().removeprefix(BOM))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return
    raise DataError(
        f"{path}: the file is one JSON {'object' if isinstance(value, dict) else 'value'} spread over several lines; a data file holds a JSON "
        "array of rows or one JSON object per line (JSON lines)",
        "invalid_json",
    )


def _progress(path: Path, size: int):  # noqa: ANN202 - tqdm or None
    if size < PROGRESS_BYTES:
        return None
    from tqdm import tqdm

    return tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", file=sys.stderr)


def _csv_rows(path: Path) -> Iterator[RawRow]:
    """CSV rows (a quoted field may span lines); bytes are decoded line by line, so bad bytes are named by
    their exact line and file offset and memory stays bounded."""

    def lines() -> Iterator[str]:
        for lineno, start, raw in _raw_lines(path):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _undecodable(path, raw, err, start, lineno) from None

    reader = csv.DictReader(lines(), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # an unterminated quote swallows the rest of the file: name where it opened
            raise DataError(
                f"{path}:{start}: malformed CSV from this line on ({err}); a quoted field is not closed, or a "
                'quote inside a field is not doubled ("")',
                "invalid_csv",
            ) from None
        source = f"{path}:{reader.line_num}"
        header = len(reader.fieldnames or [])
        extra = row.pop(None, None)
        if extra is not None or any(v is None for v in row.values()):
            count = header + len(extra or []) - sum(v is None for v in row.values())
            problem = DataError(
                f"{source}: the row has {count} fields, the header has {header}", "invalid_csv"
            )
            yield RawRow(source, error=problem)
            continue
        yield RawRow(source, row)


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({err})", "invalid_file") from None
    row_number = 0
    size = path.stat().st_size
    progress = _progress(path, size)  # compressed bytes, advanced by each batch's share of the rows
    rows = table.metadata.num_rows or 1
    try:
        for batch in table.iter_batches(batch_size=1024):
            if progress:
                progress.update(size * batch.num_rows / rows)
            for value in batch.to_pylist():
                row_number += 1
                yield RawRow(f"{path}:row {row_number}", value)
    finally:
        if progress:
            progress.close()
