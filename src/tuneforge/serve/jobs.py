"""One API call's requests on the engine, and their answers as OpenAI response bodies or event streams.

A call is one or more prompts times `n` choices; choice `p * n + j` is the j-th completion of prompt p,
as OpenAI numbers them. A client that disconnects cancels its requests (their batch slots free at the
next token).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from tuneforge.data.template import ChatTemplate
from tuneforge.inference.engine import Event, InferenceEngine, QueueFull, SamplingParams
from tuneforge.inference.requests import TokenLogprob
from tuneforge.serve.errors import ApiError
from tuneforge.serve.logprobs import chat_logprobs, completion_logprobs
from tuneforge.serve.tools import assistant_message


@dataclass
class Output:
    """What the options of the call ask to see besides the text."""

    logprobs: int | None = None  # None: no logprobs; k: with the k most probable alternatives
    echo: bool = False  # completions: the prompt comes back in front of the answer (with its logprobs)
    prompt_texts: list[str] = field(default_factory=list)  # the prompts as text, for echo


@dataclass
class Job:
    """The requests of one API call and the queue their events arrive on, as (choice index, event)."""

    handles: list[Any]
    events: asyncio.Queue[tuple[int, Event]]
    prompts: list[list[int]]  # the call's prompts; choice i answers prompts[i // n]
    n: int
    output: Output

    def prompt_of(self, i: int) -> int:
        return i // self.n

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()


@dataclass
class Choice:
    """One choice's events, gathered."""

    text: str = ""
    final: Event | None = None
    tokens: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None

    def add(self, event: Event) -> None:
        self.text += event.text
        self.tokens += event.tokens
        if event.prompt_logprobs is not None:
            self.prompt_logprobs = event.prompt_logprobs
        if event.finish_reason is not None:
            self.final = event


async def start(
    engine: InferenceEngine,
    prompts: list[list[int]],
    params: SamplingParams,
    adapter: str | None,
    n: int,
    output: Output | None = None,
    images: list[str] | None = None,
) -> Job:
    output = output or Output()
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    handles = []
    try:
        for prompt in prompts:
            for j in range(n):
                choice = dataclasses.replace(params, seed=None if params.seed is None else params.seed + j)

                def emit(event: Event, i: int = len(handles)) -> None:
                    loop.call_soon_threadsafe(events.put_nowait, (i, event))

                handles.append(
                    engine.submit(
                        prompt,
                        choice,
                        adapter,
                        emit=emit,
                        logprobs=output.logprobs,
                        # max_tokens 0 with echo: the prompt is only read, its logprobs are the answer
                        prompt_logprobs=output.echo
                        and (output.logprobs is not None or not params.max_new_tokens),
                        images=images or (),
                    )
                )
    except QueueFull as err:
        for handle in handles:
            handle.cancel()
        raise ApiError(429, f"The server is busy ({err}); retry shortly.", "queue_full") from None
    except ValueError as err:
        for handle in handles:
            handle.cancel()
        raise ApiError(400, str(err), "invalid_request") from None
    return Job(handles, events, prompts, n, output)


async def gather(job: Job, request: Request | None = None) -> list[Choice]:
    """Every choice, once all have finished; a client gone meanwhile cancels them (499)."""
    choices = [Choice() for _ in job.handles]
    # the body has been read, so the next message from the client can only be its disconnect
    gone = asyncio.ensure_future(request.receive()) if request is not None else None
    try:
        while any(c.final is None for c in choices):
            got = asyncio.ensure_future(job.events.get())
            await asyncio.wait({got, gone} - {None}, return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                got.cancel()
                if gone is not None and gone.result().get("type") == "http.disconnect":
                    raise ApiError(499, "The client closed the request.", "client_closed")
                gone = asyncio.ensure_future(request.receive())
                continue
            i, event = got.result()
            choices[i].add(event)
    finally:
        job.cancel()
        if gone is not None:
            gone.cancel()
    for c in choices:
        if c.final is not None and c.final.finish_reason == "error":
            raise ApiError(500, f"Generation failed: {c.final.error}", "generation_error")
    return choices


def chat_body(
    job: Job, choices: list[Choice], model: str, tokenizer: Any, tool_template: ChatTemplate | None = None
) -> dict[str, Any]:
    """A chat.completion; with `tool_template`, answers that call tools come back as `tool_calls`."""
    out = []
    for i, c in enumerate(choices):
        message, calls = assistant_message(tool_template, c.text, tool_template is not None)
        logprobs = chat_logprobs(tokenizer, c.tokens) if job.output.logprobs is not None else None
        reason = "tool_calls" if calls else finish_reason(c.final)
        out.append({"index": i, "message": message, "finish_reason": reason, "logprobs": logprobs})
    return _body("chat.completion", model, out, job, choices)


def text_body(job: Job, choices: list[Choice], model: str, tokenizer: Any) -> dict[str, Any]:
    """A text_completion: each choice's text (after its prompt with `echo`) and its logprobs if asked."""
    out = []
    for i, c in enumerate(choices):
        prompt_text = job.output.prompt_texts[job.prompt_of(i)]
        text = prompt_text + c.text if job.output.echo else c.text
        logprobs = None
        if job.output.logprobs is not None:
            echoed = job.prompts[job.prompt_of(i)] if job.output.echo else None
            offset = 0 if job.output.echo else len(prompt_text)
            logprobs = completion_logprobs(tokenizer, echoed, c.prompt_logprobs, c.tokens, offset)
        out.append({"index": i, "text": text, "finish_reason": finish_reason(c.final), "logprobs": logprobs})
    return _body("text_completion", model, out, job, choices)


def _body(
    kind: str, model: str, out: list[dict[str, Any]], job: Job, choices: list[Choice]
) -> dict[str, Any]:
    completion_tokens = sum(c.final.completion_tokens for c in choices if c.final is not None)
    return {
        "id": new_id(kind),
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": out,
        "usage": usage(job.prompt_tokens, completion_tokens),
    }


def stream(job: Job, model: str, kind: str, include_usage: bool, tokenizer: Any) -> StreamingResponse:
    """Server-sent chunks as the text comes (with each piece's logprobs when asked; with `echo`, the
    prompt first), then each choice's finish reason, the usage if asked, and `[DONE]`."""
    ident, created = new_id(kind), int(time.time())
    chat = kind == "chat.completion"
    want_logprobs, echo = job.output.logprobs is not None, job.output.echo and not chat
    offsets = [0] * len(job.handles)  # characters sent so far per choice (completions' text_offset)

    def chunk(choices: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage_
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def text_choice(
        i: int, text: str, event: Event | None, prompt: list[int] | None = None
    ) -> dict[str, Any]:
        logprobs = None
        if want_logprobs and event is not None:
            entries = event.prompt_logprobs if prompt is not None else None
            logprobs = completion_logprobs(tokenizer, prompt, entries, event.tokens, offsets[i])
        offsets[i] += len(text)
        return {"index": i, "text": text, "finish_reason": None, "logprobs": logprobs}

    def piece(i: int, event: Event) -> dict[str, Any] | None:
        """The chunk choice for a text event (None when it carries nothing to send)."""
        if not (event.text or (want_logprobs and event.tokens)):
            return None
        if not chat:
            return text_choice(i, event.text, event)
        delta = {"content": event.text} if event.text else {}
        logprobs = chat_logprobs(tokenizer, event.tokens) if want_logprobs else None
        return {"index": i, "delta": delta, "finish_reason": None, "logprobs": logprobs}

    def end(i: int, event: Event) -> dict[str, Any]:
        if chat:
            return {"index": i, "delta": {}, "finish_reason": finish_reason(event), "logprobs": None}
        return {"index": i, "text": "", "finish_reason": finish_reason(event), "logprobs": None}

    async def events() -> AsyncIterator[str]:
        done, tokens = 0, 0
        try:
            if chat:
                first = {"role": "assistant", "content": ""}
                yield chunk(
                    [
                        {"index": i, "delta": first, "finish_reason": None, "logprobs": None}
                        for i in range(len(job.handles))
                    ]
                )
            elif echo and not want_logprobs:
                yield chunk(
                    [
                        text_choice(i, job.output.prompt_texts[job.prompt_of(i)], None)
                        for i in range(len(job.handles))
                    ]
                )
            while done < len(job.handles):
                i, event = await job.events.get()
                if event.finish_reason == "error":
                    error = {
                        "error": {"message": f"Generation failed: {event.error}", "type": "server_error"}
                    }
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                if event.prompt_logprobs is not None:
                    if echo and want_logprobs:
                        p = job.prompt_of(i)
                        yield chunk([text_choice(i, job.output.prompt_texts[p], event, job.prompts[p])])
                    continue
                sent = piece(i, event)
                if sent is not None:
                    yield chunk([sent])
                if event.finish_reason is not None:
                    done += 1
                    tokens += event.completion_tokens
                    yield chunk([end(i, event)])
            if include_usage:
                yield chunk([], usage(job.prompt_tokens, tokens))
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects: the requests leave the batch at the next token
            job.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def as_stream(answer: dict[str, Any], include_usage: bool) -> StreamingResponse:
    """A finished chat answer as server-sent chunks: the whole message in one delta, then its finish reason."""

    def chunk(choices: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> str:
        body = {k: answer[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        body["choices"] = choices
        if include_usage:
            body["usage"] = usage_
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def events() -> Any:
        for c in answer["choices"]:
            delta = dict(c["message"])
            if delta.get("tool_calls"):
                delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(delta["tool_calls"])]
            yield chunk(
                [{"index": c["index"], "delta": delta, "finish_reason": None, "logprobs": c["logprobs"]}]
            )
            yield chunk(
                [{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"], "logprobs": None}]
            )
        if include_usage:
            yield chunk([], answer["usage"])
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def finish_reason(event: Event | None) -> str:
    reason = event.finish_reason if event else "stop"
    return "length" if reason == "length" else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id(kind: str) -> str:
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}"
