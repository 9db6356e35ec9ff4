"""Terminal chat: streams answers; `--prompt` answers once for scripts."""

from __future__ import annotations

import sys

from tuneforge.config import RunConfig


def run_chat(cfg: RunConfig, prompt: str | None) -> int:
    from tuneforge.inference.engine import ChatEngine

    engine = ChatEngine(cfg)
    if prompt is not None:
        for piece in engine.stream([{"role": "user", "content": prompt}]):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    print("tuneforge chat: type a message; 'clear' starts over, 'exit' leaves.")
    history: list[dict[str, str]] = []
    while True:
        try:
            text = input("\nUser: ")
        except EOFError:
            return 0
        if text.strip() == "exit":
            return 0
        if text.strip() == "clear":
            history = []
            print("(history cleared)")
            continue
        history.append({"role": "user", "content": text})
        print("Assistant: ", end="", flush=True)
        answer = []
        for piece in engine.stream(history):
            answer.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(answer)})
