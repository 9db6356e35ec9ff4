"""A scripted OpenAI-compatible teacher on a loopback port: it answers /v1/models and /v1/chat/completions
from a script of actions (a reply, an HTTP error, a stall longer than the client's timeout) and, when the
script runs out, from a function of the request. Every request it saw is kept in `prompts`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str
    finish_reason: str = "stop"


@dataclass
class Status:
    code: int  # answered with this HTTP status (429 and 5xx carry a short retry-after-ms)
    message: str = ""


@dataclass
class Stall:
    seconds: float  # nothing is answered for this long (the client times out first)


Action = Reply | Status | Stall


class TeacherServer:
    def __init__(self, script: list[Action] | None = None, default: Callable[[str], Action] | None = None):
        self.script = list(script or [])
        self.default = default or (lambda prompt: Reply("no script left"))
        self.prompts: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(
                    BrokenPipeError, ConnectionResetError
                ):  # the client gave up (a stall)
                    self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "teacher", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.prompts.append(prompt)
                    server.bodies.append(body)
                    action = server.script.pop(0) if server.script else None
                if action is None:
                    action = server.default(prompt)
                if isinstance(action, Stall):
                    time.sleep(action.seconds)
                    return
                if isinstance(action, Status):
                    error = {
                        "error": {"message": action.message or f"scripted {action.code}", "type": "scripted"}
                    }
                    self._send(action.code, error, {"retry-after-ms": "5"})
                    return
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "teacher"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": action.text},
                                "finish_reason": action.finish_reason,
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TeacherServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tasks_text(tasks: list[tuple[str, str, str]], chatter: str = "Sure! Here are new tasks.\n") -> str:
    """A reply in the requested form: Task N / Instruction / Input / Output blocks between ### lines."""
    blocks = [
        f"Task {i}\nInstruction: {ins}\nInput: {inp or '<none>'}\nOutput: {out}"
        for i, (ins, inp, out) in enumerate(tasks, start=4)
    ]
    return chatter + "\n###\n".join(blocks)
