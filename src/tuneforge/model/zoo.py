"""Find a model's weights: a zoo name, a local Hugging Face directory or a .gguf file.

GGUF weights (the embedded SmolLM2 ships as one) are converted once to safetensors under the
cache directory. A file lock serialises conversions and the result appears by an atomic rename,
so no process ever reads a half-written model.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneforge.utils.log import info
from tuneforge.utils.paths import fsync_tree, models_cache

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
        fsync_tree(tmp)
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
