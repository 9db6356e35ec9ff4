"""Find a model's weights: a zoo name, a local Hugging Face directory or a .gguf file.

GGUF weights (the embedded SmolLM2 ships as one) are converted once to safetensors under the
cache directory. A file lock serialises conversions and the result appears by an atomic rename,
so no process ever reads a half-written model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneforge.model import hub
from tuneforge.model.folder import check_model_folder
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import info
from tuneforge.utils.paths import models_cache

_ZOO_FILE = Path(__file__).with_name("zoo.yaml")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    package: str
    install: str
    gguf_file: str

    def gguf_path(self) -> Path | None:
        """The GGUF file inside the installed package, found without importing the package."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.gguf_file
        return path if path.is_file() else None


def zoo() -> dict[str, ZooEntry]:
    entries = yaml.safe_load(_ZOO_FILE.read_text(encoding="utf-8"))
    return {
        name: ZooEntry(name=name, **{k: v for k, v in spec.items() if k in ZooEntry.__dataclass_fields__})
        for name, spec in entries.items()
    }


def cached_dir(name: str, cache_dir: str | None = None) -> Path:
    return models_cache(cache_dir) / name


def resolve_model_path(
    name_or_path: str,
    cache_dir: str | None = None,
    revision: str = "main",
    token: str | None = None,
    ms_token: str | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
) -> Path:
    """A local directory with config.json and safetensors weights for `name_or_path` (a zoo name, a local
    folder, a .gguf file or a hub id; with `gguf_file`, that GGUF inside the folder or hub repository),
    converting or downloading if needed."""
    if gguf_file:
        folder = Path(name_or_path).expanduser()
        if folder.is_dir():
            name_or_path = str(folder / gguf_file)
        elif hub.looks_like_repo_id(name_or_path):
            name_or_path = str(hub.fetch_file(name_or_path, gguf_file, revision, cache_dir, token))
        if not Path(name_or_path).is_file():
            raise UserError(f"gguf_file {gguf_file} not found in {folder}")
    entries = zoo()
    if name_or_path in entries:
        entry = entries[name_or_path]
        target = cached_dir(entry.name, cache_dir)
        if (target / "config.json").is_file():
            return target
        gguf = entry.gguf_path()
        if gguf is None:
            raise UserError(
                f"model '{name_or_path}' comes from the Python package '{entry.package}', which is not "
                f"installed; install it with: {entry.install}"
            )
        return convert_gguf(gguf, target)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        target = models_cache(cache_dir) / f"{path.stem}-{key}"
        if (target / "config.json").is_file():
            return target
        return convert_gguf(path, target)
    if path.is_dir():
        return check_model_folder(path)
    if hub.looks_like_repo_id(name_or_path):
        snapshot = hub.fetch(name_or_path, revision, cache_dir, token, ms_token, trust_remote_code)
        return hub.check_snapshot(snapshot, name_or_path)
    known = ", ".join(sorted(entries))
    raise UserError(
        f"model '{name_or_path}' not found: it is neither a zoo name ({known}), a local model directory, "
        "a .gguf file nor a hub id like Qwen/Qwen3-0.6B"
    )


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a safetensors model directory at `target` (once, under a lock)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        info(f"converting {gguf.name} to safetensors in {target} (once)...")
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model, tokenizer = load_gguf(gguf)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _fsync_tree(tmp)
        tmp.rename(target)
        info(f"model ready in {target}")
    return target


def load_gguf(gguf: Path):  # noqa: ANN201 - transformers types are imported lazily
    """Load a GGUF file with transformers and drop the quantizer marker: the weights are plain floats now."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    return model, tokenizer


def _fsync_tree(root: Path) -> None:
    import os

    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
