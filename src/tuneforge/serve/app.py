"""The OpenAI-compatible HTTP API over an `InferenceEngine`.

Safe by default: a bearer token when one is set (compared in constant time), a body size limit,
context/`n`/`max_tokens` checks answered with 400 in OpenAI's words, a bounded queue answered with
429 + Retry-After, and errors always in OpenAI's `{"error": {...}}` shape, never a bare 500.
A streaming client that goes away cancels its request, which leaves the batch at the next token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.data.template import ChatTemplate
from tuneforge.inference.engine import Event, InferenceEngine, QueueFull, SamplingParams
from tuneforge.serve.protocol import ChatCompletionRequest, CompletionRequest
from tuneforge.serve.tools import assistant_message
from tuneforge.utils.errors import TuneforgeError


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20
    max_n: int = 8
    max_tokens: int | None = None  # per request; None: whatever fits the context
    allow_control_tokens: bool = False  # special-token text in messages stays text unless allowed


class ApiError(TuneforgeError):
    """A request the server refuses: answered with `status` and OpenAI's error shape."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, **headers: str
) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class Guard:
    """ASGI middleware: bearer-token check (all routes but /health) and the request body limit."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if (
            self.api_key
            and scope["path"] != "/health"
            and not self._authorized(headers.get("authorization", ""))
        ):
            response = error_response(
                401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.", "invalid_api_key"
            )
            return await response(scope, receive, send)
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # The body is read here, counted as it arrives (a chunked body has no length to check), so an
        # oversized one is a 413 before the app's JSON parser sees it (which would answer 400).
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later reads wait for the disconnect, as usual

        return await self.app(scope, replay, send)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        expected = self.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = error_response(
            413, f"The request body is larger than {self.max_body_bytes} bytes.", "body_too_large"
        )
        await response(scope, receive, send)


def create_app(engine: InferenceEngine, api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="tuneforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if err.status == 429 else {}
        return error_response(err.status, err.message, err.code, err.param, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "The request body is not valid JSON.", "invalid_json")
        first = problems[0] if problems else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        text = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}" for p in problems
        )
        return error_response(422, f"Invalid request: {text}", "invalid_request", where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        return error_response(500, f"Internal error: {type(err).__name__}: {err}", "internal_error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "requests_in_flight": engine.load}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "tuneforge"}
            for name in engine.model_names()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        adapter = _adapter(engine, body.model)
        system, turns = body.conversation()
        tools = json.dumps(body.tools, ensure_ascii=False) if body.tools else None
        try:
            prompt = engine.render(turns, system, tools, not limits.allow_control_tokens)
        except Exception as err:  # a conversation the template cannot render (e.g. ends with the assistant)
            raise ApiError(
                400, f"Cannot render these messages: {err}", "invalid_messages", "messages"
            ) from None
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = _params(engine, limits, body, len(prompt), max_tokens, "messages")
        job = await _start(engine, prompt, params, adapter, body.n)
        kind = "chat.completion"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.wants_tool_calls():
            # a call is only known once the answer is complete: it is sent whole (one chunk when streaming)
            answer = await _complete(
                job, body.model or engine.base_name, kind, len(prompt), request, engine.template
            )
            return _as_stream(answer, include_usage) if body.stream else answer
        if body.stream:
            return _stream(job, body.model or engine.base_name, kind, len(prompt), include_usage)
        return await _complete(job, body.model or engine.base_name, kind, len(prompt), request)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        adapter = _adapter(engine, body.model)
        if body.echo:
            raise ApiError(400, "echo is not supported", "unsupported", "echo")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(
                400, "Send one prompt per request (use n for several completions).", "unsupported", "prompt"
            )
        prompt = engine.tokenizer(prompts[0], add_special_tokens=True)["input_ids"]
        params = _params(engine, limits, body, len(prompt), body.max_tokens, "prompt")
        job = await _start(engine, prompt, params, adapter, body.n)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _stream(job, body.model or engine.base_name, "text_completion", len(prompt), include_usage)
        return await _complete(job, body.model or engine.base_name, "text_completion", len(prompt), request)

    return app


def _adapter(engine: InferenceEngine, model: str) -> str | None:
    if model in ("", engine.base_name):
        return None
    if model in engine.adapters:
        return model
    raise ApiError(
        404,
        f"The model `{model}` does not exist; available: {', '.join(engine.model_names())}.",
        "model_not_found",
        "model",
    )


def _params(
    engine: InferenceEngine, limits: Limits, body: Any, prompt_tokens: int, max_tokens: int | None, where: str
) -> SamplingParams:
    if not 1 <= body.n <= limits.max_n:
        raise ApiError(400, f"n must be between 1 and {limits.max_n} (got {body.n}).", "invalid_n", "n")
    room = engine.context_length - prompt_tokens
    if max_tokens is None:
        max_tokens = min(engine.generating.max_new_tokens, limits.max_tokens or room, room)
        if max_tokens < 1:
            raise ApiError(
                400,
                f"This model's maximum context length is {engine.context_length} tokens. However, your "
                f"{where} resulted in {prompt_tokens} tokens. Please reduce the length of the {where}.",
                "context_length_exceeded",
                where,
            )
    if max_tokens < 1 or (limits.max_tokens and max_tokens > limits.max_tokens):
        upper = f" and {limits.max_tokens}" if limits.max_tokens else ""
        raise ApiError(
            400,
            f"max_tokens must be at least 1{upper} (got {max_tokens}).",
            "invalid_max_tokens",
            "max_tokens",
        )
    if prompt_tokens + max_tokens > engine.context_length:
        raise ApiError(
            400,
            f"This model's maximum context length is {engine.context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in the completion). "
            f"Please reduce the length of the {where} or completion.",
            "context_length_exceeded",
            where,
        )
    try:
        return engine.sampling_params(
            max_new_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            repetition_penalty=body.repetition_penalty,
            stop=body.stop,
            seed=body.seed,
        )
    except ValueError as err:  # a value the sampler cannot use: the message names each bound
        raise ApiError(400, f"{err}.", "invalid_sampling", None) from None


@dataclass
class _Job:
    """The n requests of one API call and the queue their events arrive on, as (choice index, event)."""

    handles: list[Any]
    events: asyncio.Queue[tuple[int, Event]]

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()


async def _start(
    engine: InferenceEngine, prompt: list[int], params: SamplingParams, adapter: str | None, n: int
) -> _Job:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    handles = []
    try:
        for i in range(n):
            choice = dataclasses.replace(params, seed=None if params.seed is None else params.seed + i)

            def emit(event: Event, i: int = i) -> None:
                loop.call_soon_threadsafe(events.put_nowait, (i, event))

            handles.append(engine.submit(prompt, choice, adapter, emit=emit))
    except QueueFull as err:
        for handle in handles:
            handle.cancel()
        raise ApiError(429, f"The server is busy ({err}); retry shortly.", "queue_full") from None
    except ValueError as err:
        for handle in handles:
            handle.cancel()
        raise ApiError(400, str(err), "invalid_request") from None
    return _Job(handles, events)


async def _complete(
    job: _Job,
    model: str,
    kind: str,
    prompt_tokens: int,
    request: Request | None = None,
    tool_template: ChatTemplate | None = None,
) -> dict[str, Any]:
    """The whole answer; with `tool_template`, answers that call tools come back as `tool_calls`. A client
    that disconnects while waiting cancels its requests (their batch slots free at the next token)."""
    texts = [""] * len(job.handles)
    finals: list[Event | None] = [None] * len(job.handles)
    # the body has been read, so the next message from the client can only be its disconnect
    gone = asyncio.ensure_future(request.receive()) if request is not None else None
    try:
        while any(f is None for f in finals):
            got = asyncio.ensure_future(job.events.get())
            await asyncio.wait({got, gone} - {None}, return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                got.cancel()
                if gone is not None and gone.result().get("type") == "http.disconnect":
                    raise ApiError(499, "The client closed the request.", "client_closed")
                gone = asyncio.ensure_future(request.receive())
                continue
            i, event = got.result()
            texts[i] += event.text
            if event.finish_reason is not None:
                finals[i] = event
    finally:
        job.cancel()
        if gone is not None:
            gone.cancel()
    for final in finals:
        if final is not None and final.finish_reason == "error":
            raise ApiError(500, f"Generation failed: {final.error}", "generation_error")
    completion_tokens = sum(f.completion_tokens for f in finals if f is not None)
    if kind == "chat.completion":
        choices = []
        for i, f in enumerate(finals):
            message, calls = assistant_message(tool_template, texts[i], tool_template is not None)
            reason = "tool_calls" if calls else _reason(f)
            choices.append({"index": i, "message": message, "finish_reason": reason, "logprobs": None})
    else:
        choices = [
            {"index": i, "text": texts[i], "finish_reason": _reason(f), "logprobs": None}
            for i, f in enumerate(finals)
        ]
    return {
        "id": _new_id(kind),
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def _stream(job: _Job, model: str, kind: str, prompt_tokens: int, include_usage: bool) -> StreamingResponse:
    ident, created = _new_id(kind), int(time.time())
    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {
            "id": ident,
            "object": chunk_kind,
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def choice(i: int, text: str | None, reason: str | None, first: bool = False) -> dict[str, Any]:
        if kind != "chat.completion":
            return {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
        if text:
            delta["content"] = text
        return {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}

    async def events() -> AsyncIterator[str]:
        done, tokens = 0, 0
        try:
            if kind == "chat.completion":
                yield chunk([choice(i, None, None, first=True) for i in range(len(job.handles))])
            while done < len(job.handles):
                i, event = await job.events.get()
                if event.finish_reason == "error":
                    error = {
                        "error": {"message": f"Generation failed: {event.error}", "type": "server_error"}
                    }
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                if event.text:
                    yield chunk([choice(i, event.text, None)])
                if event.finish_reason is not None:
                    done += 1
                    tokens += event.completion_tokens
                    yield chunk([choice(i, None, _reason(event))])
            if include_usage:
                yield chunk([], _usage(prompt_tokens, tokens))
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects: the requests leave the batch at the next token
            job.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _as_stream(answer: dict[str, Any], include_usage: bool) -> StreamingResponse:
    """A finished chat answer as server-sent chunks: the whole message in one delta, then its finish reason."""

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body = {k: answer[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        body["choices"] = choices
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def events() -> Any:
        for c in answer["choices"]:
            delta = dict(c["message"])
            if delta.get("tool_calls"):
                delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(delta["tool_calls"])]
            yield chunk([{"index": c["index"], "delta": delta, "finish_reason": None, "logprobs": None}])
            yield chunk(
                [{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"], "logprobs": None}]
            )
        if include_usage:
            yield chunk([], answer["usage"])
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _reason(event: Event | None) -> str:
    reason = event.finish_reason if event else "stop"
    return "length" if reason == "length" else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _new_id(kind: str) -> str:
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}"
