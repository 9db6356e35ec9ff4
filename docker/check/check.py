"""Runs inside a build step of an image built FROM tuneforge:cpu (docker/check/Containerfile): waits for the board
and the API the step started, then asks each once (the board with its token, the API a chat question to the
embedded SmolLM2)."""

import json
import time
import urllib.request


def call(url: str, token: str | None = None, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)
    return json.loads(urllib.request.urlopen(request, timeout=300).read())


def wait(url: str, token: str | None = None) -> object:
    for _ in range(600):
        try:
            return call(url, token)
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} never answered")


print("board runs:", wait("http://127.0.0.1:17860/api/runs", "t0k"))
wait("http://127.0.0.1:18000/health")
question = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 12}
reply = call("http://127.0.0.1:18000/v1/chat/completions", "k3y", {**question, "temperature": 0})
print("api answer:", reply["choices"][0]["message"]["content"])
