"""One inference engine for chat, the server, evaluation and the board.

It loads a base model once, attaches any number of named LoRA adapters, and decodes requests in
batches: requests waiting together start together (left-padded), each with its own adapter (PEFT
mixed-adapter batches: one forward pass, each row through its own adapter or none), sampling
settings, seed and stop conditions. A finished or cancelled request leaves the batch at once.
Results arrive as events on the request's handle, so callers can stream or wait.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.config import GeneratingArguments, ModelArguments, RunConfig
from tuneforge.config.multimodal import MediaArguments
from tuneforge.data.template import chat_template_for, render_prompt, template_stop_ids
from tuneforge.inference.batch import Batch
from tuneforge.inference.control_text import control_strings, has_control_text, render_as_text
from tuneforge.inference.detokenize import IncrementalDetokenizer
from tuneforge.inference.images import PLACEHOLDERS, image_inputs, placed, with_image_tokens
from tuneforge.inference.loading import (  # noqa: F401 - parse_adapters is part of this module's API
    CACHE_ARGUMENT,
    context_length,
    image_facts,
    load_with_adapters,
    parse_adapters,
    stop_token_ids,
)
from tuneforge.inference.logprobs import chosen_logprobs, prompt_logprobs
from tuneforge.inference.requests import (  # noqa: F401 - Completion too
    Completion,
    Event,
    QueueFull,
    Request,
    RequestHandle,
    TokenLogprob,
)
from tuneforge.inference.sampling import SamplingParams, fresh_seed, next_tokens_or_errors
from tuneforge.inference.sequential import generate_each
from tuneforge.model.loader import load_tokenizer, local_adapter, with_local_adapters
from tuneforge.utils.log import info

if TYPE_CHECKING:
    import torch

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class _Row:
    """A request while it is being decoded."""

    request: Request
    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    seen: list[int]
    generated: int = 0


class InferenceEngine:
    """Base model + named adapters + a decoding thread. Thread-safe `submit`; `close` stops the thread."""

    def __init__(
        self,
        model_args: ModelArguments,
        generating: GeneratingArguments | None = None,
        template: str | None = None,
        adapters: dict[str, str] | None = None,
        max_batch_size: int = 8,
        max_queue: int = 64,
        batch_wait_s: float = 0.005,
        media: MediaArguments | None = None,
    ):
        import torch

        model_args = with_local_adapters(model_args)
        self.model_args = model_args
        self.generating = generating or GeneratingArguments()
        self.tokenizer = load_tokenizer(model_args)
        self.template = chat_template_for(self.tokenizer, template)
        self.adapters = {name: str(local_adapter(p, model_args)) for name, p in (adapters or {}).items()}
        self.model = load_with_adapters(model_args, self.adapters)
        self.vision = image_facts(model_args, self.tokenizer, media)  # None for text-only models
        # Prompt-learning adapters change the input sequence itself, vision-language models take images:
        # both decode through generate(), one request at a time.
        self.sequential = self.vision is not None or bool(
            getattr(getattr(self.model, "active_peft_config", None), "is_prompt_learning", False)
        )
        self.device = next(self.model.parameters()).device
        self.context_length = context_length(self.model)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer) | template_stop_ids(
            self.template, self.tokenizer
        )
        self._control_strings = control_strings(self.tokenizer)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s  # after a request arrives, how long to wait for others to join it
        self.batch_sizes: list[int] = []  # size of every batch decoded so far (for tests and benchmarks)
        self._pending: queue.Queue[Request] = queue.Queue()
        self._active = 0  # requests accepted and not finished (waiting or decoding)
        self._lock = threading.Lock()
        self._taken: list[Request] = []  # the requests of the batch being decoded, joiners included
        self._closed = threading.Event()
        self._torch = torch
        self._worker = threading.Thread(target=self._loop, name="tuneforge-engine", daemon=True)
        self._worker.start()
        # An engine never closed (a script that just ends) still stops its thread before the interpreter
        # tears torch down; a thread killed inside a torch call aborts the process at exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._pending, self._closed, self._worker)

    @classmethod
    def from_config(
        cls, cfg: RunConfig, adapters: dict[str, str] | None = None, **options: Any
    ) -> InferenceEngine:
        """The engine `infer_backend` names (a member of `tuneforge.inference.backends`), for the config's model,
        template and generating defaults."""
        from tuneforge.inference.backends import BACKENDS

        return BACKENDS.get(cfg.model.infer_backend).target(cfg, adapters, **options)

    # ---- public API ----

    def model_names(self) -> list[str]:
        """The base model's name, then each adapter's."""
        return [self.base_name, *self.adapters]

    @property
    def base_name(self) -> str:
        name = self.model_args.model_name_or_path.rstrip("/")
        return name.rsplit("/", 1)[-1]

    def sampling_params(self, **overrides: Any) -> SamplingParams:
        """The config's generating defaults, with `overrides` (None values ignored)."""
        g = self.generating
        params = SamplingParams(
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature if g.do_sample else 0.0,
            top_p=g.top_p,
            top_k=g.top_k,
            repetition_penalty=g.repetition_penalty,
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(params, key, value)
        problems = params.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return params

    def fit(self, params: SamplingParams, prompt_tokens: int) -> SamplingParams:
        """`params` with max_new_tokens cut to the room the context leaves (chat defaults may ask for more)."""
        room = max(1, self.context_length - prompt_tokens)
        return params if params.max_new_tokens <= room else dataclasses.replace(params, max_new_tokens=room)

    def render(
        self,
        messages: list[dict[str, Any]],
        system: str | None = None,
        tools: str | None = None,
        control_tokens_as_text: bool = True,
        images: Sequence[str] = (),
    ) -> list[int]:
        """Prompt ids for a conversation (and tool definitions, as JSON), rendered exactly as in training,
        ending where the answer starts. Special-token strings inside the content are tokenized as text
        (no role injection) unless `control_tokens_as_text` is False. Each `<image>` in the messages stands
        for the next of `images` and becomes its image tokens, as in training (`<video>` and `<audio>` likewise,
        for `video:` and `audio:` references among `images`)."""
        system = system or self.generating.default_system
        placeholders = set(PLACEHOLDERS.values())
        with_images = bool(images) or any(placed(messages, p) for p in placeholders)

        def plain(turns: list[dict[str, Any]], sys_prompt: str | None) -> list[int]:
            if with_images:  # after control text is hidden: the image tokens are the only real ones added
                turns = with_image_tokens(self.vision, self.base_name, turns, images)
            return render_prompt(turns, self.tokenizer, self.template, sys_prompt, tools)

        controls = [c for c in self._control_strings if c not in placeholders]
        if control_tokens_as_text and has_control_text(messages, system, controls):
            return render_as_text(messages, system, self.tokenizer, plain, keep=placeholders)
        return plain(messages, system)

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams | None = None,
        adapter: str | None = None,
        emit: Callable[[Event], None] | None = None,
        logprobs: int | None = None,
        prompt_logprobs: bool = False,
        images: Sequence[str] = (),
    ) -> RequestHandle:
        """Queue a request. `emit` receives its events on the engine's thread (else iterate the handle).

        `logprobs` (k >= 0) reports each chosen token's log-probability with the k most probable tokens at
        its position; `prompt_logprobs` does the same for every prompt token, before any text, and with
        `max_new_tokens` 0 the request only scores its prompt.

        `images` are the files whose tokens `render(..., images=...)` put in the prompt, in order.

        Raises QueueFull when `max_queue` requests are already waiting or running, and ValueError for
        an unknown adapter or a prompt that leaves no room in the context.
        """
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"unknown adapter '{adapter}'; loaded: {', '.join(self.adapters) or 'none'}")
        params = params or self.sampling_params()
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if self.sequential and (logprobs is not None or prompt_logprobs):
            raise ValueError(
                "log-probabilities are not available with prompt-learning adapters or vision-language models"
            )
        model_inputs = image_inputs(self.vision, prompt_ids, images, self.device) if self.vision else None
        if params.max_new_tokens < (0 if prompt_logprobs else 1):
            raise ValueError(f"max_new_tokens must be at least 1 (got {params.max_new_tokens})")
        if len(prompt_ids) + params.max_new_tokens > self.context_length:
            raise ValueError(
                f"the prompt has {len(prompt_ids)} tokens and {params.max_new_tokens} more were asked for, "
                f"over this model's context length of {self.context_length}"
            )
        events: queue.Queue[Event] | None = None
        if emit is None:
            events = queue.Queue()
            emit = events.put
        request = Request(list(prompt_ids), params, adapter, emit, logprobs, prompt_logprobs, model_inputs)
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("the engine is closed")
            if self._active >= self.max_queue:
                raise QueueFull(f"{self._active} requests are already queued or running")
            self._active += 1
        self._pending.put(request)
        return RequestHandle(request, events, self._cancel_waiting)

    def generate(
        self, prompt_ids: list[int], params: SamplingParams | None = None, adapter: str | None = None
    ) -> Completion:
        return self.submit(prompt_ids, params, adapter).result()

    def stream_chat(
        self, messages: list[dict[str, str]], adapter: str | None = None, params: SamplingParams | None = None
    ) -> Iterator[str]:
        """Answer the conversation's last user message, piece by piece (never a broken character)."""
        prompt = self.render(messages)
        handle = self.submit(prompt, self.fit(params or self.sampling_params(), len(prompt)), adapter)
        try:
            yield from handle
        finally:
            handle.cancel()

    def chat(
        self, messages: list[dict[str, str]], adapter: str | None = None, params: SamplingParams | None = None
    ) -> str:
        return "".join(self.stream_chat(messages, adapter, params))

    @property
    def load(self) -> int:
        """Requests accepted and not finished."""
        return self._active

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the decoding thread ----

    def _loop(self) -> None:
        while not self._closed.is_set():
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._pending.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._closed.set()
                    break
                batch.append(nxt)
            live = [r for r in batch if not self._drop_if_cancelled(r)]
            if not live:
                continue
            self.batch_sizes.append(len(live))
            self._taken = list(live)  # with every request that joins this batch later
            try:
                with self._torch.inference_mode():
                    if self.sequential:
                        for request in live:
                            self._decode_with_generate(request)
                    else:
                        self._decode(live)
            except Exception as err:  # report to every caller instead of killing the thread
                info(f"generation failed: {err!r}")
                for request in self._taken:  # joiners too: each is answered and its slot freed
                    self._finish(request, Event(finish_reason="error", error=str(err)))

    def _cancel_waiting(self, request: Request) -> None:
        with self._lock:
            waiting = not request.started
        if waiting:
            self._finish(request, Event(finish_reason="cancelled"))

    def _drop_if_cancelled(self, request: Request) -> bool:
        """Mark `request` as started; True (and reported) if it was cancelled while waiting."""
        with self._lock:
            request.started = True
        if request.cancelled.is_set():
            self._finish(request, Event(finish_reason="cancelled"))
            return True
        return False

    def _finish(self, request: Request, event: Event) -> None:
        """Report the end of `request` once, and free its slot."""
        with self._lock:
            if request.finished:
                return
            request.finished = True
            self._active -= 1
        request.emit(event)

    def _decode(self, requests: list[Request]) -> None:
        """Prefill, then one token per live row per step until all are done; requests that arrive
        meanwhile join the running batch at a step boundary while there is room."""
        batch = self._prefill(requests)
        while batch.rows:
            room = self.max_batch_size - len(batch.rows)
            if room > 0 and batch.can_join():
                joining = self._take_waiting(room)
                if joining:
                    newcomers = self._prefill(joining)
                    if newcomers.rows:
                        batch.join(newcomers)
                        self.batch_sizes.append(len(batch.rows))
            self._step(batch)

    def _take_waiting(self, limit: int) -> list[Request]:
        taken: list[Request] = []
        while len(taken) < limit:
            try:
                request = self._pending.get_nowait()
            except queue.Empty:
                break
            if request is None:  # close() was called
                self._closed.set()
                break
            if not self._drop_if_cancelled(request):
                taken.append(request)
        self._taken.extend(taken)
        return taken

    def _prefill(self, requests: list[Request]) -> Batch:
        """A new batch for `requests`, after its first forward pass (finished rows already gone)."""
        rows = [self._start_row(r) for r in requests]
        batch = Batch.start(
            rows, [r.prompt_ids for r in requests], self.tokenizer.pad_token_id or 0, self._new_cache()
        )
        self._step(batch, score_prompts=any(r.prompt_logprobs for r in requests))
        return batch

    def _step(self, batch: Batch, score_prompts: bool = False) -> None:
        """One forward pass: a token for every row; finished rows leave, the rest get their token as next input.
        With `score_prompts` (a prefill), the logits of every position are kept to score the prompts."""
        adapters = [row.request.adapter for row in batch.rows]
        logits = self._forward(
            batch.next_input, batch.mask, batch.positions, batch.cache, adapters, all_positions=score_prompts
        )
        rows = batch.rows
        if score_prompts:
            for row, entries in zip(rows, prompt_logprobs(logits, [r.request for r in rows]), strict=True):
                if entries is not None:
                    row.request.emit(Event(prompt_logprobs=entries))
            logits = logits[:, -1]
        chosen = self._sample(logits, rows)
        entries = chosen_logprobs(logits, [r.request for r in rows], chosen, self.stop_ids)
        keep = [
            i
            for i, (row, token) in enumerate(zip(rows, chosen, strict=True))
            if token is not None and not self._advance(row, token, entries[i])
        ]
        batch.keep(keep)
        if keep:
            batch.advance([chosen[i] for i in keep])

    def _sample(self, logits: Any, rows: list[_Row]) -> list[int | None]:
        """The next token of every row; a row that cannot be sampled ends alone, with an error (None)."""
        chosen = next_tokens_or_errors(
            logits, [r.request.params for r in rows], [r.seen for r in rows], [r.generator for r in rows]
        )
        for row, token in zip(rows, chosen, strict=True):
            if isinstance(token, Exception):
                info(f"generation failed for one request: {token!r}")
                self._finish(row.request, Event(finish_reason="error", error=str(token)))
        return [None if isinstance(t, Exception) else t for t in chosen]

    def _decode_with_generate(self, request: Request) -> None:
        """One request through `model.generate` (prompt-learning adapters), tokens fed to `_advance`."""
        row = self._start_row(request)
        pad_id = self.tokenizer.pad_token_id
        if not generate_each(self.model, request, self.stop_ids, pad_id, lambda t: self._advance(row, t)):
            self._emit_rest(row)
            self._finish(request, Event(finish_reason="stop", completion_tokens=row.generated))

    def _start_row(self, request: Request) -> _Row:
        seed = request.params.seed
        generator = None
        if not request.params.greedy:
            generator = self._torch.Generator().manual_seed(seed if seed is not None else fresh_seed())
        return _Row(
            request,
            IncrementalDetokenizer(self.tokenizer, request.params.stop),
            generator,
            list(request.prompt_ids),
        )

    def _advance(self, row: _Row, token: int, entry: TokenLogprob | None = None) -> bool:
        """Add `token` to `row` and emit its text (and `entry`, its logprob); True when the row is finished
        (and has been reported)."""
        request = row.request
        if request.cancelled.is_set():
            self._finish(request, Event(finish_reason="cancelled", completion_tokens=row.generated))
            return True
        if request.params.max_new_tokens == 0:  # the prompt was only scored
            self._finish(request, Event(finish_reason="length"))
            return True
        tokens = [entry] if entry is not None else []
        if token in self.stop_ids:
            self._emit_rest(row)
            self._finish(request, Event(finish_reason="stop", completion_tokens=row.generated, tokens=tokens))
            return True
        row.generated += 1
        row.seen.append(token)
        piece = row.detok.push(token)
        if row.detok.stopped:
            if piece:
                request.emit(Event(text=piece))
            self._finish(request, Event(finish_reason="stop", completion_tokens=row.generated, tokens=tokens))
            return True
        if piece or tokens:
            request.emit(Event(text=piece, tokens=tokens))
        if row.generated >= request.params.max_new_tokens:
            self._emit_rest(row)
            self._finish(request, Event(finish_reason="length", completion_tokens=row.generated))
            return True
        return False

    @staticmethod
    def _emit_rest(row: _Row) -> None:
        rest = row.detok.flush()
        if rest:
            row.request.emit(Event(text=rest))

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        adapters: list[str | None],
        all_positions: bool = False,
    ) -> torch.Tensor:
        """Logits `[batch, vocab]` of the last position (`[batch, seq, vocab]` with `all_positions`); each
        row through its own adapter."""
        device = self.device
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "position_ids": positions.to(device),
            "use_cache": True,
            "logits_to_keep": 0 if all_positions else 1,
            CACHE_ARGUMENT: cache,
        }
        if self.adapters:
            kwargs["adapter_names"] = [a or BASE for a in adapters]
        logits = self.model(**kwargs).logits
        return logits if all_positions else logits[:, -1]


def _shutdown(pending: queue.Queue[Any], closed: threading.Event, worker: threading.Thread) -> None:
    closed.set()
    pending.put(None)  # wakes the worker
    worker.join(timeout=30)
