"""Inference backends as plug-ins: `infer_backend: NAME` picks the member that builds the engine for chat,
serve and evaluation. A member is `build(cfg, adapters, **options) -> engine`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneforge.config.plugins import family

BACKENDS = family("infer_backend")


def register_backend(name: str) -> Callable[[Any], Any]:
    return BACKENDS.register(name)
