"""Where a model comes from, as plug-ins: each member claims the `model_name_or_path` values it knows (a zoo
name, a .gguf file, a local folder, a hub id) and turns them into a local folder of config.json and weights.

Members are tried in their `order`; the first that claims the name resolves it. A new source (another hub,
an object store) is one file here with `@register_source("name", order=N)` on a class with `claims` and
`resolve` (`folder.py` is the one to copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.plugins import family
from tuneforge.model import hub
from tuneforge.utils.errors import UserError

SOURCES = family("model_source")


@dataclass(frozen=True)
class ModelRequest:
    """A model to make available locally, with what the hubs need to fetch it."""

    name: str
    cache_dir: str | None = None
    revision: str = "main"
    token: str | None = None
    ms_token: str | None = None
    trust_remote_code: bool = False


def register_source(name: str, order: int) -> Callable[[Any], Any]:
    """Register a class with `claims(name) -> bool` and `resolve(request) -> Path` as source `name`."""
    return SOURCES.register(name, order=order)


def resolve(request: ModelRequest) -> Path:
    """The local folder of `request.name` from the first source that claims it, or a sentence listing what
    a name may be."""
    members = sorted(SOURCES.members().values(), key=lambda m: m.traits["order"])
    for member in members:
        source = member.target()
        if source.claims(request.name):
            return source.resolve(request)
    from tuneforge.model.zoo import zoo

    raise UserError(
        f"model '{request.name}' not found: it is neither a zoo name ({', '.join(sorted(zoo()))}), a local model "
        "directory, a .gguf file nor a hub id like Qwen/Qwen3-0.6B"
    )


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
    folder, a .gguf file or a hub id: the members of `tuneforge.model.sources`; with `gguf_file`, that GGUF
    inside the folder or hub repository), converting or downloading if needed."""
    if gguf_file:
        folder = Path(name_or_path).expanduser()
        if folder.is_dir():
            name_or_path = str(folder / gguf_file)
        elif hub.looks_like_repo_id(name_or_path):
            name_or_path = str(hub.fetch_file(name_or_path, gguf_file, revision, cache_dir, token))
        if not Path(name_or_path).is_file():
            raise UserError(f"gguf_file {gguf_file} not found in {folder}")
    return resolve(ModelRequest(name_or_path, cache_dir, revision, token, ms_token, trust_remote_code))
