"""`tuneforge serve`: the OpenAI-compatible API over one base model and any number of named adapters."""

from __future__ import annotations

import os
import sys

from tuneforge.config import RunConfig
from tuneforge.utils.errors import UserError

SERVE_FLAGS = (
    "adapters",
    "host",
    "port",
    "api_key",
    "max_batch_size",
    "max_queue",
    "max_body_bytes",
    "max_n",
    "max_tokens",
    "allow_control_tokens",
)
SERVE_HELP = """usage: tuneforge serve [CONFIG.yaml] [--adapters name=path,...] [--host 127.0.0.1] [--port 8000]
                       [--api_key KEY] [--key value ...]

Serves POST /v1/chat/completions, POST /v1/completions, GET /v1/models and GET /health.
A request's `model` picks the base model (its name in /v1/models) or an adapter by name.

  --adapters name=path,...  LoRA adapters served side by side on the one base model
  --host HOST               address to bind (default 127.0.0.1: this machine only)
  --port PORT               default 8000
  --api_key KEY             require 'Authorization: Bearer KEY' (default: $TUNEFORGE_API_KEY, else none)
  --max_batch_size N        requests decoded together (default 8)
  --max_queue N             requests accepted at once, waiting or running; more get 429 (default 64)
  --max_body_bytes N        largest request body (default 1048576); larger get 413
  --max_n N                 largest `n` (default 8)
  --max_tokens N            largest `max_tokens` (default: what fits the context)
  --allow_control_tokens    tokenize special-token text in messages (<|im_end|>, ...) as control tokens;
                            by default it is tokenized as plain text, so no message can inject a role

Keys:
"""


def _int(options: dict[str, str], key: str, default: int | None) -> int | None:
    value = options.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"--{key} takes a whole number (got '{value}')") from None
    if number < (0 if key == "port" else 1):
        raise UserError(f"--{key} must be positive (got {number})")
    if key == "port" and number > 65535:
        raise UserError(f"--port must be at most 65535 (got {number})")
    return number


def run_serve(cfg: RunConfig, options: dict[str, str]) -> int:
    from tuneforge.inference.loading import check_adapter_folder, parse_adapters
    from tuneforge.model.loader import model_path
    from tuneforge.serve.app import Limits
    from tuneforge.serve.server import DEFAULT_HOST, serve

    host = options.get("host", DEFAULT_HOST)
    port = _int(options, "port", 8000)
    api_key = options.get("api_key") or os.environ.get("TUNEFORGE_API_KEY") or None
    limits = Limits(
        max_body_bytes=_int(options, "max_body_bytes", 1 << 20),
        max_n=_int(options, "max_n", 8),
        max_tokens=_int(options, "max_tokens", None),
        allow_control_tokens=options.get("allow_control_tokens", "false").lower() in ("1", "true", "yes"),
    )
    adapters = parse_adapters(options.get("adapters"))
    for name, path in adapters.items():  # before the model loads
        check_adapter_folder(name, path)
    model_path(cfg.model)  # found or downloaded before the engine's seconds of imports; it then finds it here
    from tuneforge.inference.engine import InferenceEngine

    engine = InferenceEngine.from_config(
        cfg,
        adapters,
        max_batch_size=_int(options, "max_batch_size", 8),
        max_queue=_int(options, "max_queue", 64),
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(
            f"tuneforge: warning: serving on {host} without --api_key: anyone who can reach it can use it",
            file=sys.stderr,
        )
    print(
        f"tuneforge: serving {', '.join(engine.model_names())} on http://{host}:{port}/v1"
        + (" (API key required)" if api_key else ""),
        file=sys.stderr,
    )
    try:
        serve(engine, host, port, api_key, limits)
    finally:
        engine.close()
    return 0
