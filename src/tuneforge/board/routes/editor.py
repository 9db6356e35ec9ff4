"""What the train form calls: the config as YAML and back, the datasets of a folder, a data preview."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml
from fastapi import APIRouter, Request

from tuneforge.board.paths import inside_roots
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


@router.post("/estimate")
async def estimate(request: Request, processes: int | None = None) -> Any:
    """The train form's peak memory per device (`tuneforge estimate`), before any weights load: the model is
    built on the meta device from its config. `processes`: how many would train (default: the devices here)."""
    board = board_state(request)
    flat = {k: v for k, v in (await body_object(request)).items() if v is not None}
    model = str(flat.get("model_name_or_path") or "")
    problem = (
        board.chats.check_model(model) if model else "key 'model_name_or_path': pick a model to estimate"
    )
    problems = [problem] if problem else []
    deepspeed = flat.get("deepspeed")
    if deepspeed and not inside_roots(str(deepspeed), board.roots):
        problems.append(f"key 'deepspeed': {deepspeed} is outside the folders this board may use")
    try:
        cfg = build_config(flat)
    except ConfigError as err:
        problems += list(err.problems)
    if problems:
        raise Problems(problems)
    return await asyncio.to_thread(_estimate, cfg, processes)


def _estimate(cfg: Any, processes: int | None) -> dict[str, Any]:
    import torch

    from tuneforge.train.estimate import available_memory
    from tuneforge.train.estimate import estimate as estimate_memory
    from tuneforge.train.launch import accelerators
    from tuneforge.utils.errors import TuneforgeError

    devices = accelerators()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        result = estimate_memory(cfg, max(processes or devices or 1, 1), device)
    except (TuneforgeError, OSError, ValueError) as err:  # an unreadable model config, a bad deepspeed file
        raise Problems([str(err)]) from None
    return result.as_dict(available_memory(device))


@router.get("/datasets")
async def datasets(request: Request, dataset_dir: str = "data") -> Any:
    return {"datasets": board_state(request).previews.datasets(dataset_dir)}


@router.post("/preview")
async def preview(request: Request) -> Any:
    body = await parse_body(request, PreviewRequest)
    return await asyncio.to_thread(board_state(request).previews.preview, body.config(), body.rows)
