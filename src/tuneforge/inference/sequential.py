"""Decoding one request at a time through `model.generate`, for models whose input a batch cannot share
(prompt-learning adapters prepend virtual tokens inside the model; vision-language models take image
tensors and, for Qwen2-VL, 3-D positions that generate derives from them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneforge.inference.requests import Request
from tuneforge.inference.sampling import fresh_seed


class _Finished(Exception):
    """Raised from the streamer to end generate() once the caller has had enough tokens."""


def generate_each(
    model: Any, request: Request, stop_ids: set[int], pad_id: int | None, on_token: Callable[[int], bool]
) -> bool:
    """Generate for `request`, handing each new token to `on_token` (which returns True to stop there).
    True when `on_token` ended it; False when generate stopped by itself (a stop token or its limit)."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    params = request.params

    class Sink(BaseStreamer):
        prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate passes the prompt first
                self.prompt_seen = True
                return
            for token in value.flatten().tolist():
                if on_token(token):
                    raise _Finished

        def end(self) -> None:
            pass

    if not params.greedy:
        torch.manual_seed(params.seed if params.seed is not None else fresh_seed())
    ids = torch.tensor([request.prompt_ids], device=next(model.parameters()).device)
    sampling = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
    try:
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=params.max_new_tokens + 1,  # on_token ends the request at its own limit
            do_sample=not params.greedy,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=pad_id,
            streamer=Sink(),
            **(sampling if not params.greedy else {}),
            **(request.model_inputs or {}),
        )
    except _Finished:
        return True
    return False
