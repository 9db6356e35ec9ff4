"""Errors the API answers in OpenAI's `{"error": {...}}` shape."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from tuneforge.utils.errors import TuneforgeError


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
