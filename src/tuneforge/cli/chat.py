"""Terminal chat on the inference engine: streams answers; `--prompt` answers once for scripts.

In a session: /adapter NAME switches adapter (/adapter base: none), /system TEXT sets the system
prompt, /reset forgets the conversation, /exit leaves.
"""

from __future__ import annotations

import sys

from tuneforge.config import RunConfig

HELP = "commands: /adapter NAME|base, /system TEXT, /reset, /exit"


def run_chat(
    cfg: RunConfig, prompt: str | None, adapters: str | None = None, adapter: str | None = None
) -> int:
    from tuneforge.inference.engine import InferenceEngine, parse_adapters
    from tuneforge.utils.errors import UserError

    engine = InferenceEngine.from_config(cfg, parse_adapters(adapters))
    if adapter is not None and adapter not in engine.adapters:
        raise UserError(
            f"--adapter {adapter}: not among --adapters ({', '.join(engine.adapters) or 'none given'})"
        )
    try:
        if prompt is not None:
            _answer(engine, [{"role": "user", "content": prompt}], adapter, None)
            return 0
        return _session(engine, adapter)
    finally:
        engine.close()


def _answer(engine: object, history: list[dict[str, str]], adapter: str | None, system: str | None) -> str:
    prompt = engine.render(history, system)
    handle = engine.submit(prompt, engine.fit(engine.sampling_params(), len(prompt)), adapter)
    pieces = []
    try:
        for piece in handle:
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:
        handle.cancel()  # Ctrl-C mid-answer frees the engine at once
    sys.stdout.write("\n")
    return "".join(pieces)


def _session(engine: object, adapter: str | None) -> int:
    names = ", ".join(engine.adapters) or "none"
    print(f"tuneforge chat: type a message. Adapters: {names}. {HELP}")
    history: list[dict[str, str]] = []
    system: str | None = None
    while True:
        label = f" [{adapter}]" if adapter else ""
        try:
            text = input(f"\nUser{label}: ")
        except EOFError:
            return 0
        command, _, rest = text.strip().partition(" ")
        if command in ("/exit", "exit"):
            return 0
        if command in ("/reset", "clear"):
            history = []
            print("(conversation reset)")
            continue
        if command == "/system":
            system = rest.strip() or None
            history = []
            print(f"(system prompt {'set' if system else 'cleared'}; conversation reset)")
            continue
        if command == "/adapter":
            wanted = rest.strip()
            if wanted in ("", "base"):
                adapter = None
            elif wanted in engine.adapters:
                adapter = wanted
            else:
                print(f"(no adapter '{wanted}'; loaded: {names})")
                continue
            print(f"(now answering with {adapter or 'the base model'})")
            continue
        if command.startswith("/"):
            print(f"(unknown command; {HELP})")
            continue
        history.append({"role": "user", "content": text})
        print("Assistant: ", end="", flush=True)
        history.append({"role": "assistant", "content": _answer(engine, history, adapter, system)})
