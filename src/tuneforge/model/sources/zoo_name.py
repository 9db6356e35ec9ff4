"""A name from the model zoo (`tuneforge models`): its GGUF, shipped in a Python package, converted once."""

from __future__ import annotations

from pathlib import Path

from tuneforge.model.sources import ModelRequest, register_source
from tuneforge.utils.errors import UserError


@register_source("zoo", order=10)
class ZooSource:
    def claims(self, name: str) -> bool:
        from tuneforge.model.zoo import zoo

        return name in zoo()

    def resolve(self, request: ModelRequest) -> Path:
        from tuneforge.model.zoo import cached_dir, convert_gguf, zoo

        entry = zoo()[request.name]
        target = cached_dir(entry.name, request.cache_dir)
        if (target / "config.json").is_file():
            return target
        gguf = entry.gguf_path()
        if gguf is None:
            raise UserError(
                f"model '{request.name}' comes from the Python package '{entry.package}', which is not "
                f"installed; install it with: {entry.install}"
            )
        return convert_gguf(gguf, target)
