"""Checkpoints that cannot corrupt: staged, fsynced, hashed into a manifest, then renamed into place.

A checkpoint directory `checkpoint-N` exists only once every file in it is on disk and listed,
with its size and SHA-256, in `manifest.json`. A process killed at any moment leaves either the
previous checkpoints untouched plus a `.partial-checkpoint-N` folder (ignored and removed on the
next start) or a complete new checkpoint. Verification names what is wrong with a damaged one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

PREFIX = "checkpoint-"
PARTIAL = ".partial-"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
T = TypeVar("T")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def _pause_between_files() -> None:
    """No-op; fault-injection tests replace it to widen the window in which a write can be killed."""


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def _each_at_once(work: Callable[[Path], T], paths: list[Path]) -> list[T]:
    """`work` on every path, one thread each up to the machine's cores; results in `paths`' order."""
    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="checkpoint-hash") as pool:
        return list(pool.map(work, paths))


@contextlib.contextmanager
def torch_saves_without_crc32() -> Iterator[None]:
    """`torch.save` skips its zip records' CRC-32 inside the block (torch 2.6 and later; elsewhere nothing
    changes). The manifest's SHA-256 already covers every byte of a checkpoint, and the CRC was most of what
    saving the optimizer state cost: 1.08 GB into a new file took 1.03-1.12 s with it and 0.37-0.46 s without
    (2 cores). `torch.load` reads such files as before (only unzip tools would complain of the missing CRC)."""
    import torch.serialization

    read = getattr(torch.serialization, "get_crc32_options", None)
    write = getattr(torch.serialization, "set_crc32_options", None)
    if read is None or write is None:
        yield
        return
    before = read()
    write(False)
    try:
        yield
    finally:
        write(before)


def _entry(path: Path) -> dict[str, object]:
    """fsync one staged file; its size and SHA-256."""
    _fsync_file(path)
    entry: dict[str, object] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    _pause_between_files()
    return entry


def write_manifest(directory: Path, step: int) -> None:
    """fsync every file under `directory`, then write `manifest.json` (itself fsynced) listing them.

    The files are hashed several at a time, one thread each up to the machine's cores (hashlib and fsync release
    the GIL): a full fine-tuning checkpoint of SmolLM2 (0.54 GB of weights, 1.08 GB of optimizer state) took
    0.72-0.76 instead of 1.05-1.07 s on 2 cores, and a sharded checkpoint of a large model is hashed on as many
    cores as it has shards."""
    files = _files(directory)
    hashed = _each_at_once(_entry, files)
    entries = {
        path.relative_to(directory).as_posix(): entry for path, entry in zip(files, hashed, strict=True)
    }
    manifest = directory / MANIFEST
    manifest.write_text(json.dumps({"step": step, "files": entries}, indent=1), encoding="utf-8")
    _fsync_file(manifest)
    _fsync_dir(directory)


def publish(staging: Path, final: Path, step: int) -> Path:
    """Manifest `staging`, then atomically make it `final` (replacing a damaged one of the same name)."""
    write_manifest(staging, step)
    if final.exists():  # e.g. a damaged checkpoint-N left by a crash, being rewritten after a resume
        trash = final.with_name(f"{PARTIAL}trash-{final.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    return final


def _manifest_entries(manifest: Path) -> dict[str, dict[str, object]] | str:
    """The manifest's `{file: {size, sha256}}`, or what is wrong with it: any damage that still parses as JSON
    (a renamed key, a wrong type, a path out of the folder) makes the checkpoint damaged, never a crash."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return f"{manifest.name} is unreadable"
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries or not isinstance(data.get("step"), int):
        return f"{manifest.name} is malformed (no step, or no list of files)"
    for name, expected in entries.items():
        ok = (
            isinstance(expected, dict)
            and type(expected.get("size")) is int
            and isinstance(expected.get("sha256"), str)
            and len(expected["sha256"]) == 64
        )
        if not ok:
            return f"{manifest.name} is malformed at {name!r} (each file needs an integer size and a SHA-256)"
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"{manifest.name} names a file outside the checkpoint ({name!r})"
    return entries


def verify(directory: Path) -> str | None:
    """None when `directory` is a complete, intact checkpoint; otherwise what is wrong, in words."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return f"{manifest.name} is missing (the checkpoint was not completely written)"
    entries = _manifest_entries(manifest)
    if isinstance(entries, str):
        return entries
    for name, expected in entries.items():  # the cheap checks first, then every file hashed (at once)
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} is truncated or extended ({size} bytes, manifest says {expected['size']})"
    digests = _each_at_once(sha256_file, [directory / name for name in entries])
    for (name, expected), digest in zip(entries.items(), digests, strict=True):
        if digest != expected["sha256"]:
            return f"{name} is corrupted (its SHA-256 does not match the manifest)"
    return None


def list_checkpoints(output_dir: Path) -> list[Checkpoint]:
    """Every `checkpoint-N` folder under `output_dir`, oldest step first (complete or not)."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir():
            found.append(Checkpoint(child, int(match.group(1))))
    return sorted(found, key=lambda c: c.step)


def newest_complete(output_dir: Path) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the (path, problem) of each newer one that did not."""
    damaged = []
    for checkpoint in reversed(list_checkpoints(output_dir)):
        problem = verify(checkpoint.path)
        if problem is None:
            return checkpoint, damaged
        damaged.append((checkpoint.path, problem))
    return None, damaged


def remove_partials(output_dir: Path) -> None:
    """Delete folders left by writes that never finished (they were never checkpoints)."""
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            if child.name.startswith(PARTIAL) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def rotate(output_dir: Path, limit: int | None, keep: Iterable[Path] = ()) -> list[Path]:
    """Delete the oldest checkpoints beyond `limit`; never the newest complete one nor any in `keep`.

    Damaged checkpoints count against the limit and go first. Returns the deleted paths.
    """
    if not limit:
        return []
    checkpoints = list_checkpoints(output_dir)
    newest, _ = newest_complete(output_dir)
    protected = {Path(p).resolve() for p in keep}
    if newest is not None:
        protected.add(newest.path.resolve())
    damaged = [c for c in checkpoints if (c.path / MANIFEST).is_file() is False]
    order = damaged + [c for c in checkpoints if c not in damaged]
    excess = len(checkpoints) - limit
    deleted = []
    for checkpoint in order:
        if excess <= 0:
            break
        if checkpoint.path.resolve() in protected:
            continue
        # Out of sight in one rename first, so a kill mid-delete never leaves a half-deleted checkpoint-N.
        trash = checkpoint.path.with_name(f"{PARTIAL}trash-{checkpoint.path.name}")
        os.replace(checkpoint.path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(checkpoint.path)
        excess -= 1
    return deleted
