"""Tokenized-data cache: a second run on the same data, template, tokenizer and cutoff starts at once.

The key hashes everything that changes the tokens: each data file's path, size and modification
time, the dataset_info entries, the chat template, the tokenizer's full definition and the data
keys that shape examples. Tokens are stored as safetensors (no pickle), written to a temporary
folder and renamed into place, so a crash never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tuneforge.config import DataArguments
from tuneforge.data.loader import RowProblem, dataset_spec
from tuneforge.data.readers import data_files
from tuneforge.data.table import SFTData, TokenTable
from tuneforge.utils.paths import tuneforge_home

FORMAT_VERSION = 1
SHAPING_KEYS = (
    "dataset", "template", "cutoff_len", "truncation", "max_samples", "train_on_prompt", "mask_history", "mix_strategy",
    "interleave_probs", "on_bad_rows", "enable_thinking", "tool_format", "media_dir", "image_max_pixels",
    "image_min_pixels",
)  # fmt: skip


def cache_key(
    args: DataArguments, tokenizer: Any, template: str, seed: int, stage: str = "sft", images: str = ""
) -> str:
    """`images` describes how the model turns an image into tokens (empty for text-only models)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({k: getattr(args, k) for k in SHAPING_KEYS}, sort_keys=True).encode())
    digest.update(f"{FORMAT_VERSION}:{seed}:{stage}:{template}:{images}".encode())
    for name in args.dataset or []:
        spec = dataset_spec(name, args.dataset_dir)
        digest.update(json.dumps(spec.__dict__, sort_keys=True, default=str).encode())
        if spec.hub:  # a hub dataset is keyed by its id, subset, split and revision (pin revision to be sure)
            continue
        for path in data_files(Path(args.dataset_dir), spec.file_name):
            stat = path.stat()
            digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    backend = getattr(tokenizer, "_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(tokenizer)).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def cache_dir(key: str) -> Path:
    return tuneforge_home() / "cache" / "tokenized" / key


def save(data: SFTData, key: str) -> Path:
    from safetensors.numpy import save_file

    table = TokenTable.from_examples(data.train)
    target = cache_dir(key)
    tmp = target.with_name(f"{key}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {
            "input_ids": table.ids,
            "labels": table.labels,
            "offsets": table.offsets,
            "truncated": table.truncated,
        },
        str(tmp / "tokens.safetensors"),
    )
    meta = {
        "sources": table.sources,
        "images": table.images,
        "truncated": data.truncated,
        "dropped_no_target": data.dropped_no_target,
        "skipped": [p.__dict__ for p in data.skipped],
        "special_token_rows": data.special_token_rows,
        "dropped_cut_images": data.dropped_cut_images,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another run wrote the same key in the meantime: the same tokens, keep that copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "meta.json").is_file():
            raise
    return target


def load(key: str) -> SFTData | None:
    """The cached data for `key`, or None when there is none (or it cannot be read)."""
    from safetensors.numpy import load_file

    folder = cache_dir(key)
    try:
        arrays = load_file(str(folder / "tokens.safetensors"))
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    images = [tuple(row) for row in meta["images"]] if meta.get("images") else None
    train = TokenTable(
        arrays["input_ids"], arrays["labels"], arrays["offsets"], meta["sources"], arrays["truncated"], images
    )
    if len(train.offsets) != len(train.sources) + 1:
        return None
    return SFTData(
        train=train,
        truncated=meta["truncated"],
        dropped_no_target=meta["dropped_no_target"],
        skipped=[RowProblem(**p) for p in meta["skipped"]],
        special_token_rows=meta["special_token_rows"],
        dropped_cut_images=meta.get("dropped_cut_images", []),
    )
