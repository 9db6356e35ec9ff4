"""A path to a .gguf file: de-quantized and converted to safetensors once, cached by path, size and time."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tuneforge.model.sources import ModelRequest, register_source
from tuneforge.utils.paths import models_cache


@register_source("gguf", order=20)
class GGUFSource:
    def claims(self, name: str) -> bool:
        path = Path(name).expanduser()
        return path.is_file() and path.suffix == ".gguf"

    def resolve(self, request: ModelRequest) -> Path:
        from tuneforge.model.zoo import convert_gguf

        path = Path(request.name).expanduser()
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        target = models_cache(request.cache_dir) / f"{path.stem}-{key}"
        if (target / "config.json").is_file():
            return target
        return convert_gguf(path, target)
