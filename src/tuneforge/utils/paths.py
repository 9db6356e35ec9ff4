"""Where tuneforge keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def tuneforge_home() -> Path:
    """`$TUNEFORGE_HOME`, default `~/.cache/tuneforge`."""
    return Path(os.environ.get("TUNEFORGE_HOME") or Path.home() / ".cache" / "tuneforge").expanduser()


def models_cache(cache_dir: str | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else tuneforge_home() / "models"


def fsync_tree(root: Path) -> None:
    """Flush every file below `root` (and the folders) to disk, before a rename publishes them."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
