"""The OpenAI-compatible HTTP API over an `InferenceEngine`.

Safe by default: a bearer token when one is set (compared in constant time), a body size limit,
context/`n`/`max_tokens` checks answered with 400 in OpenAI's words, a bounded queue answered with
429 + Retry-After, and errors always in OpenAI's `{"error": {...}}` shape, never a bare 500.
A streaming client that goes away cancels its request, which leaves the batch at the next token.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.data.media import image_from_url, media_ref
from tuneforge.inference.engine import InferenceEngine, SamplingParams
from tuneforge.serve.errors import ApiError, error_response
from tuneforge.serve.jobs import Output, as_stream, chat_body, gather, start, stream, text_body
from tuneforge.serve.protocol import ChatCompletionRequest, CompletionRequest
from tuneforge.serve.tokenize import prompt_ids, tokenizer_routes


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20
    max_n: int = 8
    max_tokens: int | None = None  # per request; None: whatever fits the context
    allow_control_tokens: bool = False  # special-token text in messages stays text unless allowed


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
            images = [media_ref(kind, image_from_url(url, kind)) for kind, url in body.media()]
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_image", "messages") from None
        try:
            prompt = engine.render(turns, system, tools, not limits.allow_control_tokens, images=images)
        except Exception as err:  # a conversation the template cannot render (e.g. ends with the assistant)
            raise ApiError(
                400, f"Cannot render these messages: {err}", "invalid_messages", "messages"
            ) from None
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true.", "invalid_request", "top_logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = _params(engine, limits, body, len(prompt), max_tokens, "messages")
        output = Output(logprobs=(body.top_logprobs or 0) if body.logprobs else None)
        job = await start(engine, [prompt], params, adapter, body.n, output, images)
        model = body.model or engine.base_name
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.wants_tool_calls():
            # a call is only known once the answer is complete: it is sent whole (one chunk when streaming)
            answer = chat_body(job, await gather(job, request), model, engine.tokenizer, engine.template)
            return as_stream(answer, include_usage) if body.stream else answer
        if body.stream:
            return stream(job, model, "chat.completion", include_usage, engine.tokenizer)
        return chat_body(job, await gather(job, request), model, engine.tokenizer)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        adapter = _adapter(engine, body.model)
        prompts, texts = prompt_ids(engine, body.prompt)
        if len(prompts) * body.n > engine.max_queue:
            raise ApiError(
                400,
                f"{len(prompts)} prompts x n={body.n} is more than the {engine.max_queue} requests this server "
                "queues; send fewer prompts per request.",
                "too_many_prompts",
                "prompt",
            )
        longest = max(len(p) for p in prompts)
        params = _params(engine, limits, body, longest, body.max_tokens, "prompt", scoring=body.echo)
        output = Output(logprobs=body.logprobs, echo=body.echo, prompt_texts=texts)
        job = await start(engine, prompts, params, adapter, body.n, output)
        model = body.model or engine.base_name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return stream(job, model, "text_completion", include_usage, engine.tokenizer)
        return text_body(job, await gather(job, request), model, engine.tokenizer)

    app.include_router(tokenizer_routes(engine, limits.allow_control_tokens))
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
    engine: InferenceEngine,
    limits: Limits,
    body: Any,
    prompt_tokens: int,
    max_tokens: int | None,
    where: str,
    scoring: bool = False,
) -> SamplingParams:
    """Sampling settings for the call, each bound checked; `scoring` (echo) also allows max_tokens 0."""
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
    lowest = 0 if scoring else 1
    if max_tokens < lowest or (limits.max_tokens and max_tokens > limits.max_tokens):
        upper = f" and {limits.max_tokens}" if limits.max_tokens else ""
        with_echo = " (0 with echo)" if not scoring else ""
        raise ApiError(
            400,
            f"max_tokens must be at least {lowest}{with_echo}{upper} (got {max_tokens}).",
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
