"""The board's chat: one inference engine at a time, for the base model and adapters picked on the page.

Adapters are finished runs (by id, loaded from the run's output directory) or adapter folders under
the board's allowed roots; the base model is a zoo name or a path under those roots.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tuneforge.board.paths import inside_roots
from tuneforge.config import GeneratingArguments, ModelArguments
from tuneforge.runs.registry import RunRegistry


class ChatEngines:
    def __init__(self, registry: RunRegistry, roots: list[Path]):
        self.registry, self.roots = registry, roots
        self._engine: Any = None
        self._key: tuple[str, tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    def adapters_available(self) -> list[dict[str, str]]:
        """Finished runs whose output holds an adapter."""
        return [
            {"id": r.id, "name": r.name, "model": str(r.config.get("model_name_or_path", ""))}
            for r in self.registry.list()
            if r.status == "done" and (Path(r.output_dir) / "adapter_config.json").is_file()
        ]

    def check_model(self, model: str) -> str | None:
        """A problem with the base model name, or None (zoo names and paths under the roots are fine)."""
        from tuneforge.model.zoo import zoo

        if model in zoo():
            return None
        if inside_roots(model, self.roots):
            return None
        return f"model {model} is neither a zoo model nor under the folders this board may use"

    def adapter_folders(self, entries: list[str]) -> tuple[dict[str, str], list[str]]:
        """Each entry (a finished run's id, or an adapter folder under the roots) with its folder, and
        a problem for every entry that is neither."""
        runs = {a["id"] for a in self.adapters_available()}
        folders, problems = {}, []
        for entry in entries:
            if entry in runs:
                folders[entry] = self.registry.get(entry).output_dir
            elif inside_roots(entry, self.roots) and (Path(entry) / "adapter_config.json").is_file():
                folders[entry] = str(Path(entry).resolve())
            else:
                problems.append(
                    f"adapter {entry} is neither a finished run with an adapter nor an adapter folder under "
                    "the folders this board may use"
                )
        return folders, problems

    def engine(self, model: str, folders: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """The engine for this base model and these adapters (built on first use, then reused), and the
        engine's name for each adapter (paths are not valid adapter names)."""
        from tuneforge.inference.engine import InferenceEngine

        names = {entry: f"adapter{i}" for i, entry in enumerate(folders)}
        key = (model, tuple(folders.items()))
        with self._lock:
            if self._key != key:
                if self._engine is not None:
                    self._engine.close()
                adapters = {names[entry]: folder for entry, folder in folders.items()}
                self._engine = InferenceEngine(
                    ModelArguments(model_name_or_path=model), GeneratingArguments(), adapters=adapters
                )
                self._key = key
            return self._engine, names

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()


async def stream_answer(
    engine: Any, prompt: list[int], adapter: str | None, params: Any, images: list[str] | None = None
) -> AsyncIterator[str]:
    """Server-sent `data: {"text": ...}` pieces, then `data: [DONE]`; a closed page cancels the request."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    try:
        handle = engine.submit(
            prompt,
            params,
            adapter,
            emit=lambda e: loop.call_soon_threadsafe(queue.put_nowait, e),
            images=images or (),
        )
    except Exception as err:  # a full queue, an unknown adapter: said in the stream, not a broken page
        yield f"data: {json.dumps({'error': str(err)})}\n\n"
        yield "data: [DONE]\n\n"
        return
    try:
        while True:
            event = await queue.get()
            if event.text:
                yield f"data: {json.dumps({'text': event.text}, ensure_ascii=False)}\n\n"
            if event.finish_reason is not None:
                if event.error:
                    yield f"data: {json.dumps({'error': event.error})}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        handle.cancel()
