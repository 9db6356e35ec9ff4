"""Running the API with uvicorn: in the foreground (`tuneforge serve`) or on a background thread
(tests, benchmarks, the board), always on 127.0.0.1 unless a host is given."""

from __future__ import annotations

import threading
import time
from typing import Any

from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.app import Limits, create_app

DEFAULT_HOST = "127.0.0.1"


def _server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve(
    engine: InferenceEngine,
    host: str = DEFAULT_HOST,
    port: int = 8000,
    api_key: str | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve until interrupted."""
    _server(create_app(engine, api_key, limits), host, port).run()


class BackgroundServer:
    """The API (or any ASGI `app`, e.g. the board's) on a thread; `port=0` picks a free port (read
    `.port`). Use as a context manager."""

    def __init__(
        self,
        engine: InferenceEngine | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        api_key: str | None = None,
        limits: Limits | None = None,
        app: Any = None,
    ):
        self.server = _server(app if app is not None else create_app(engine, api_key, limits), host, port)
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="tuneforge-serve", daemon=True)
        self.host = host
        self.port = port

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
