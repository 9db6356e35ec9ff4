"""POST /api/chat: stream an answer from a base model and the adapters picked on the chat page."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuneforge.board.chat import stream_answer
from tuneforge.board.requests import ChatRequest, Problems, parse_body
from tuneforge.board.state import board_state
from tuneforge.data.media import image_from_url
from tuneforge.inference.images import IMAGE

router = APIRouter(prefix="/api")


@router.post("/chat")
async def chat(request: Request) -> Any:
    body = await parse_body(request, ChatRequest)
    chats = board_state(request).chats
    folders, problems = chats.adapter_folders(body.adapters)
    problem = chats.check_model(body.model)
    if problem:
        problems.append(problem)
    if not body.messages:
        problems.append("messages must be a non-empty list of {role, content}")
    if body.adapter is not None and body.adapter not in body.adapters:
        problems.append(f"adapter {body.adapter} is not among the loaded adapters")
    if problems:
        raise Problems(problems)
    images = []
    for url in (url for m in body.messages for url in m.images):
        if not url.startswith("data:"):
            raise Problems(["images are sent as data: URLs (uploaded on the chat page)"])
        try:
            images.append(image_from_url(url))
        except ValueError as err:
            raise Problems([str(err)]) from None
    engine, names = await asyncio.to_thread(chats.engine, body.model, folders)
    adapter = names[body.adapter] if body.adapter is not None else None
    # an uploaded image goes before the text of its turn
    turns = [{"role": m.role, "content": IMAGE * len(m.images) + m.content} for m in body.messages]
    try:
        prompt = engine.render(turns, images=images)
    except Exception as err:  # e.g. turns out of order, images for a text-only model
        raise Problems([f"cannot render these messages: {err}"]) from None
    room = engine.context_length - len(prompt)
    if room < 1:
        raise Problems([f"the conversation fills the context ({len(prompt)} tokens)"])
    params = engine.sampling_params(
        max_new_tokens=min(body.max_new_tokens, room), temperature=body.temperature, top_p=body.top_p
    )
    return StreamingResponse(
        stream_answer(engine, prompt, adapter, params, images), media_type="text/event-stream"
    )
