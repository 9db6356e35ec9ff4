"""One way to tell the user something went differently from what they asked: a line on stderr."""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    """`tuneforge: warning: MESSAGE` on stderr (never stdout, which commands may pipe)."""
    print(f"tuneforge: warning: {message}", file=sys.stderr, flush=True)
