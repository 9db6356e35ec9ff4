"""What callers hold while the engine decodes for them: the request, its events, and its handle."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tuneforge.inference.sampling import SamplingParams


class QueueFull(Exception):
    """More requests are waiting than the engine accepts; try again shortly."""


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string), "length", "cancelled" or "error"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class TokenLogprob:
    """A token the model read or chose, its log-probability under the model (before temperature and
    penalties), and the most probable tokens at that position, best first."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    stop: bool = False  # an end-of-turn token: it ends the answer and is not part of its text


@dataclass
class Event:
    """A text piece (`finish_reason` None) or the end of a request (`finish_reason` set).

    With logprobs asked for, `tokens` holds the chosen tokens this event covers (a piece of text may
    wait for the next token, so an event can carry tokens and no text), and one event before any
    text carries `prompt_logprobs`: one entry per prompt token, None for the first (nothing precedes it).
    """

    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None
    tokens: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None
    emit: Callable[[Event], None] | None = None
    logprobs: int | None = None  # None: none; k: each chosen token's log-probability and the k most probable
    prompt_logprobs: bool = False  # also every prompt token's (with the same k alternatives)
    model_inputs: dict[str, Any] | None = None  # besides the ids: a vision-language model's image tensors
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    started: bool = False  # picked up by the decoding thread
    finished: bool = False


class RequestHandle:
    """What `InferenceEngine.submit` returns: iterate for text pieces, or `result()` to wait."""

    def __init__(
        self, request: Request, events: queue.Queue[Event] | None, on_cancel: Callable[[Request], None]
    ):
        self.request = request
        self._events = events
        self._on_cancel = on_cancel
        self._pieces: list[str] = []
        self.final: Event | None = None

    def cancel(self) -> None:
        """Stop the request: a waiting one frees its slot now, a running one at its next token."""
        self.request.cancelled.set()
        self._on_cancel(self.request)

    def __iter__(self) -> Iterator[str]:
        if self._events is None:
            raise RuntimeError("this request delivers its events to a callback")
        while self.final is None:
            event = self._events.get()
            if event.finish_reason is not None:
                self.final = event
                if event.error:
                    raise RuntimeError(event.error)
            if event.text:
                self._pieces.append(event.text)
                yield event.text

    def result(self) -> Completion:
        for _ in self:
            pass
        assert self.final is not None
        return Completion(
            "".join(self._pieces),
            self.final.finish_reason or "stop",
            len(self.request.prompt_ids),
            self.final.completion_tokens,
        )
