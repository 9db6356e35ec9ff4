"""The teacher: a model behind any OpenAI-compatible endpoint, reached with the official `openai` client.

The client retries a request that timed out, could not connect or got 429 / 5xx, with exponential backoff
and the server's Retry-After (`synth_max_retries` times, `synth_timeout` seconds each). A request that
still fails is a `TeacherError` (counted by the caller, who goes on); a refusal that no retry can fix
(401, 403, 404: wrong key, wrong model, wrong URL) stops the run with a `UserError` that says what to check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tuneforge.utils.errors import UserError


class TeacherError(Exception):
    """One request failed after its retries; the message says how (HTTP status, timeout, connection)."""


@dataclass
class Reply:
    text: str
    truncated: bool  # the teacher stopped at synth_max_tokens


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise UserError(
            "tuneforge synth talks to the endpoint with the openai client: pip install 'tuneforge[synth]'"
        ) from None
    return openai


class Teacher:
    def __init__(self, args: Any):
        openai = _openai()
        self.args = args
        key = (
            args.synth_api_key or os.environ.get(args.synth_api_key_env) or "none"
        )  # local servers need none
        self.client = openai.OpenAI(
            base_url=args.synth_base_url,
            api_key=key,
            max_retries=args.synth_max_retries,
            timeout=args.synth_timeout,
        )
        self.model = args.synth_model or self._first_model()
        self.length_key = "max_tokens"  # what vLLM, Ollama, llama.cpp and tuneforge serve read

    def _first_model(self) -> str:
        openai = _openai()
        try:
            names = [m.id for m in self.client.models.list()]
        except openai.APIError as err:
            raise UserError(
                f"{self.args.synth_base_url} did not list its models ({_describe(err)}); check synth_base_url, "
                "or set synth_model"
            ) from None
        if not names:
            raise UserError(f"{self.args.synth_base_url} serves no model; set synth_model")
        return names[0]

    def ask(self, prompt: str) -> Reply:
        """The teacher's answer to one user message."""
        openai = _openai()
        try:
            try:
                out = self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=self.args.synth_temperature,
                    **{self.length_key: self.args.synth_max_tokens},
                )
            except openai.BadRequestError as err:
                if self.length_key != "max_tokens" or "max_completion_tokens" not in str(err):
                    raise
                # OpenAI's reasoning models refuse max_tokens and name its successor: use that from now on
                self.length_key = "max_completion_tokens"
                return self.ask(prompt)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
            raise UserError(
                f"{self.args.synth_base_url} refused the request ({_describe(err)}); check synth_api_key (or "
                f"${self.args.synth_api_key_env}), synth_model and synth_base_url"
            ) from None
        except openai.APIError as err:
            raise TeacherError(_describe(err)) from None
        if not out.choices:
            raise TeacherError("the endpoint answered with no choice")
        choice = out.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason == "length")


def _describe(err: Exception) -> str:
    status = getattr(err, "status_code", None)
    name = type(err).__name__
    message = str(getattr(err, "message", "") or err)
    return f"HTTP {status}: {message}"[:300] if status else f"{name}: {message}"[:300]
