"""What the board's API accepts, as pydantic models (like `serve/protocol.py`), and how a body is read:
any malformed body is a 4xx with a sentence, never a traceback."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import yaml
from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneforge.board.guard import MAX_KEYS, count_keys

Model = TypeVar("Model", bound=BaseModel)


class ChatTurn(BaseModel):
    role: str
    content: str = ""
    images: list[str] = Field(default_factory=list)  # data: URLs of images shown with this turn (uploads)


class ChatRequest(BaseModel):
    """POST /api/chat: a base model, adapters (run ids or folders), the conversation, who answers."""

    model: str = "smollm2-135m-instruct"
    adapters: list[str] = Field(default_factory=list)
    messages: list[ChatTurn] = Field(default_factory=list)
    adapter: str | None = None
    max_new_tokens: int = Field(256, gt=0)
    temperature: float | None = Field(None, ge=0)  # None: the model's generating defaults; 0: greedy
    top_p: float | None = Field(None, gt=0, le=1)


class ParseYamlRequest(BaseModel):
    """POST /api/parse-yaml: a YAML file's text, to fill the train form."""

    yaml: str = ""


class PreviewRequest(BaseModel):
    """POST /api/preview: the train form's keys and how many rows to show."""

    model_config = ConfigDict(extra="allow")
    rows: int = Field(3, ge=1, le=50)

    def config(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


async def body_object(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 4xx that says what shape was expected."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(422, f"the body must be a JSON object, not a {type(body).__name__}")
    if count_keys(body) > MAX_KEYS:
        raise HTTPException(413, f"the body has more than {MAX_KEYS} keys and items")
    return body


class Problems(Exception):
    """Sentences answered as `422 {"problems": [...]}`."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


async def parse_body(request: Request, model: type[Model]) -> Model:
    """The body validated by `model`; its problems become sentences naming the field (422)."""
    body = await body_object(request)
    try:
        return model.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "body"
            problems.append(f"{where}: {e['msg']}")
        raise Problems(problems) from None


def safe_yaml(text: str) -> Any:
    """YAML without aliases (`*name`): a few hundred bytes of nested aliases expand to gigabytes."""
    if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text, Loader=yaml.SafeLoader)):
        raise yaml.YAMLError("aliases (*name) are not accepted in a config")
    return yaml.safe_load(text) or {}
