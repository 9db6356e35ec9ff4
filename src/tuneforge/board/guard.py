"""What keeps the board safe without a token: only its own pages may change anything, only its own host
names may reach it, and no request body can be large enough to hurt.

- Writes (POST) from another origin are refused: a browser names the page that sent a request in
  `Origin` (and `Sec-Fetch-Site`), and a page on another site, or on another port of this machine, is
  not the board. API writes with a body must also be JSON, which a plain HTML form cannot send.
- The `Host` header must name the board's own host (loopback names, the bound address, or `--allowed_hosts`),
  which defeats DNS rebinding: a hostile name that resolves to 127.0.0.1 still says its own name.
- Bodies are limited in bytes (chunked ones too) and JSON bodies in keys; YAML with aliases is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 1 << 20
MAX_KEYS = 2000


def host_name(value: str) -> str:
    """`host[:port]` (or `[v6]:port`) to the host name, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BoardGuard:
    """ASGI middleware in front of the board's app."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = (), max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.hosts = LOOPBACK | {h.lower() for h in allowed_hosts}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self.problem(scope, headers)
        if problem:
            status, message = problem
            return await _reply(send, status, message)
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            receive = self._limited(receive, send)
        try:
            await self.app(scope, receive, send)
        except _TooLarge:
            await _reply(send, 413, f"the request body is larger than {self.max_body_bytes} bytes")

    def problem(self, scope: dict, headers: dict[str, str]) -> tuple[int, str] | None:
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            return (
                421,
                f"this board answers to {', '.join(sorted(self.hosts))}, not '{host}' (see --allowed_hosts)",
            )
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            return None
        origin = headers.get("origin")
        if origin is not None and (
            origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
        ):
            return 403, f"writes are accepted from the board's own pages only, not from {origin}"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "writes are accepted from the board's own pages only (Sec-Fetch-Site)"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return 413, f"the request body is larger than {self.max_body_bytes} bytes"
        is_json = headers.get("content-type", "").split(";")[0].strip() == "application/json"
        has_body = length not in (None, "0") or "chunked" in headers.get("transfer-encoding", "")
        if scope["path"].startswith("/api/") and has_body and not is_json:
            return 415, "the board's API takes JSON bodies (Content-Type: application/json)"
        return None

    def _limited(self, receive: Any, send: Any) -> Any:
        seen = 0

        async def counting() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise _TooLarge
            return message

        return counting


class _TooLarge(Exception):
    pass


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def count_keys(value: Any, limit: int = MAX_KEYS) -> int:
    """Keys and items in a JSON value, stopping once past `limit`."""
    stack, count = [value], 0
    while stack and count <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            count += len(item)
            stack.extend(item)
    return count
