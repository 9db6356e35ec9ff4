"""Terminal chat on the inference engine: streams answers; `--prompt` answers once for scripts.

In a session: /adapter NAME switches adapter (/adapter base: none), /system TEXT sets the system
prompt, /image PATH shows a vision-language model an image with the next message (/video PATH and
/audio PATH a video or a sound, for the models that read them), /reset forgets the conversation, /exit
leaves. `--image PATH[,PATH]`, `--video` and `--audio` do the same for `--prompt`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.data.media import PLACEHOLDERS, media_ref

HELP = "commands: /adapter NAME|base, /system TEXT, /image PATH, /video PATH, /audio PATH, /reset, /exit"
__all__ = ["media_ref", "run_chat", "with_images"]


def with_images(text: str, refs: list[str]) -> str:
    """A user message showing these media: each kind's placeholders first unless the text places them."""
    from tuneforge.data.media import kind_of

    front = ""
    for kind, placeholder in PLACEHOLDERS.items():
        count = sum(1 for r in refs if kind_of(r) == kind)
        if placeholder not in text:
            front += placeholder * count
    return front + text


def run_chat(
    cfg: RunConfig,
    prompt: str | None,
    adapters: str | None = None,
    adapter: str | None = None,
    images: list[str] | None = None,
) -> int:
    from tuneforge.model.loader import model_path
    from tuneforge.utils.errors import UserError

    # found (or downloaded) first: a mistyped or uncached model is a sentence in a second, not after the seconds
    # of imports the engine takes; the engine then finds it where this put it
    model_path(cfg.model)
    from tuneforge.inference.engine import InferenceEngine, parse_adapters

    engine = InferenceEngine.from_config(cfg, parse_adapters(adapters))
    if adapter is not None and adapter not in engine.adapters:
        raise UserError(
            f"--adapter {adapter}: not among --adapters ({', '.join(engine.adapters) or 'none given'})"
        )
    images = images or []  # media references (`media_ref`)
    from tuneforge.data.media import audio_file, kind_of, video_files

    for ref in images:
        kind = kind_of(ref)
        path = {"image": lambda r: r, "video": lambda r: video_files(r)[0], "audio": audio_file}[kind](ref)
        if not Path(path).is_file():
            raise UserError(f"--{kind} {path}: no such file")
    try:
        if prompt is not None:
            _answer(engine, [{"role": "user", "content": with_images(prompt, images)}], adapter, None, images)
            return 0
        return _session(engine, adapter)
    finally:
        engine.close()


def _answer(
    engine: object,
    history: list[dict[str, str]],
    adapter: str | None,
    system: str | None,
    images: list[str] | None = None,
) -> str:
    images = images or []
    prompt = engine.render(history, system, images=images)
    handle = engine.submit(prompt, engine.fit(engine.sampling_params(), len(prompt)), adapter, images=images)
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
    images: list[str] = []  # every image of the conversation, in order
    waiting: list[str] = []  # shown with the next message
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
            history, images, waiting = [], [], []
            print("(conversation reset)")
            continue
        if command in ("/image", "/video", "/audio"):
            path, kind = rest.strip(), command[1:]
            if engine.vision is None or kind not in engine.vision.kinds:
                print(f"(this model cannot read {kind}s)")
            elif not Path(path).is_file():
                print(f"(no such file: {path})")
            else:
                waiting.append(media_ref(kind, path))
                print(f"({kind} {path} goes with your next message)")
            continue
        if command == "/system":
            system = rest.strip() or None
            history, images, waiting = [], [], []
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
        history.append({"role": "user", "content": with_images(text, waiting)})
        images, waiting = images + waiting, []
        print("Assistant: ", end="", flush=True)
        history.append({"role": "assistant", "content": _answer(engine, history, adapter, system, images)})
