"""What this machine runs: versions and devices, for bug reports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> str:
    import torch

    from tuneforge import __version__

    cuda = torch.cuda.is_available()
    rows = [
        ("tuneforge", __version__),
        ("Python", sys.version.split()[0]),
        ("platform", platform.platform()),
        *(
            (name, _version(name))
            for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate")
        ),
        ("bitsandbytes", _version("bitsandbytes")),
        ("CUDA available", str(cuda)),
        ("device", torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment variable `name` (of `env`, default this process's) is set to a true value (1,
    true, yes, on), as the Hugging Face and ModelScope clients read their flags (HF_HUB_OFFLINE, ...)."""
    return (os.environ if env is None else env).get(name, "").strip().lower() in ("1", "true", "yes", "on")
