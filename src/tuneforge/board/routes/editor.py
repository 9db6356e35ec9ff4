"""What the train form calls: the config as YAML and back, the datasets of a folder, a data preview."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml
from fastapi import APIRouter, Request

from tuneforge.board.requests import (
    ParseYamlRequest,
    PreviewRequest,
    Problems,
    body_object,
    parse_body,
    safe_yaml,
)
from tuneforge.board.state import board_state
from tuneforge.config import ConfigError, build_config

router = APIRouter(prefix="/api")


@router.post("/yaml")
async def to_yaml(request: Request) -> dict[str, str]:
    flat = {k: v for k, v in (await body_object(request)).items() if v is not None}
    return {"yaml": yaml.safe_dump(flat, sort_keys=False, allow_unicode=True)}


@router.post("/parse-yaml")
async def parse_yaml(request: Request) -> Any:
    body = await parse_body(request, ParseYamlRequest)
    try:
        flat = safe_yaml(body.yaml)
    except yaml.YAMLError as err:
        raise Problems([f"not valid YAML: {err}"]) from None
    if not isinstance(flat, dict):
        raise Problems(["the YAML must be a mapping of config keys"])
    try:
        return {"config": build_config(flat).to_flat()}
    except ConfigError as err:
        raise Problems(list(err.problems)) from None


@router.get("/datasets")
async def datasets(request: Request, dataset_dir: str = "data") -> Any:
    return {"datasets": board_state(request).previews.datasets(dataset_dir)}


@router.post("/preview")
async def preview(request: Request) -> Any:
    body = await parse_body(request, PreviewRequest)
    return await asyncio.to_thread(board_state(request).previews.preview, body.config(), body.rows)
