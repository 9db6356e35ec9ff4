"""Where tuneforge keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def tuneforge_home() -> Path:
    """`$TUNEFORGE_HOME`, default `~/.cache/tuneforge`."""
    return Path(os.environ.get("TUNEFORGE_HOME") or Path.home() / ".cache" / "tuneforge").expanduser()


def models_cache(cache_dir: str | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else tuneforge_home() / "models"
