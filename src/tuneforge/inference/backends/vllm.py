"""`infer_backend: vllm`: accepted as LLaMA-Factory names it, refused in a sentence until it is built."""

from __future__ import annotations

from typing import Any

from tuneforge.inference.backends import register_backend
from tuneforge.utils.errors import UserError


@register_backend("vllm")
def build(cfg: Any, adapters: dict[str, str] | None = None, **options: Any) -> Any:
    raise UserError(
        "infer_backend: vllm is not available in this version of tuneforge: the vLLM engine needs a CUDA "
        "machine to be built and tested on. Use infer_backend: huggingface."
    )
