"""Diagnostics through the standard `logging` module, printed the way tuneforge always printed them.

Modules log to `logging.getLogger("tuneforge")` (or a child such as `tuneforge.board`). Records reach the
terminal as `tuneforge: MESSAGE` (`tuneforge board: MESSAGE` for the board), warnings as
`tuneforge: warning: MESSAGE`, on stderr (never stdout, which commands may pipe). Applications that
embed tuneforge can attach their own handlers or silence it with `logging.getLogger("tuneforge")`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time of the record (tests and redirections replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = record.name.replace(".", " ")
            kind = "warning: " if record.levelno >= logging.WARNING else ""
            print(f"{prefix}: {kind}{record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # a log line must never take the run down
            self.handleError(record)


def get_logger(name: str = "tuneforge") -> logging.Logger:
    """The `tuneforge` logger (or a child), printing to stderr at INFO unless the application configured it."""
    root = logging.getLogger("tuneforge")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name)


def info(message: str) -> None:
    """`tuneforge: MESSAGE` on stderr."""
    get_logger().info(message)


def warn(message: str) -> None:
    """`tuneforge: warning: MESSAGE` on stderr."""
    get_logger().warning(message)


class _DropWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


@contextmanager
def warnings_given() -> Iterator[None]:
    """A block whose warnings were already given once for this run (the same config checked again later): its
    `tuneforge: warning:` lines are dropped; errors still show."""
    logger = get_logger()
    dropped = _DropWarnings()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
