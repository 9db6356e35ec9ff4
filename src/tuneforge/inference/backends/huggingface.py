"""`infer_backend: huggingface`: tuneforge's own batched engine on transformers (any device, many adapters)."""

from __future__ import annotations

from typing import Any

from tuneforge.inference.backends import register_backend


@register_backend("huggingface")
def build(cfg: Any, adapters: dict[str, str] | None = None, **options: Any) -> Any:
    from tuneforge.inference.engine import InferenceEngine

    return InferenceEngine(cfg.model, cfg.generating, cfg.data.template, adapters, media=cfg.data, **options)
