"""What a model folder must hold to load: config.json with a model_type, intact weights, a tokenizer.

Each check names the missing or damaged file and what to do, before transformers would fail on it with a
traceback. Used by the zoo (local folders), the hub (downloaded snapshots) and the loader (tokenizers).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.utils.errors import UserError


def check_model_folder(path: Path) -> Path:
    """A Hugging Face model folder that loads, or a sentence naming what is missing or damaged: config.json
    (present, a JSON object) and weights (safetensors with intact headers, or .bin)."""
    import json

    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{path} is a directory but has no config.json; point to a Hugging Face model folder")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{config} is not valid JSON ({err}); restore it from the original model") from None
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        raise UserError(f"{config} has no model_type, so transformers cannot tell which model it describes")
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("*.bin")):
        raise UserError(f"{path} has no weights (*.safetensors or *.bin); copy them from the original model")
    for file in weights:
        problem = safetensors_problem(file)
        if problem:
            raise UserError(f"{file} is damaged: {problem}; download or copy it again")
    return path


def check_tokenizer_files(path: Path) -> None:
    """A model folder with a tokenizer, or a sentence saying which files to copy in."""
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if path.is_dir() and not any((path / name).is_file() for name in tokenizer_files):
        raise UserError(
            f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json); copy the base model's "
            "tokenizer files into it"
        )


def safetensors_problem(file: Path) -> str | None:
    """What is wrong with a safetensors file's framing (header and sizes), read without loading it."""
    import json
    import struct

    size = file.stat().st_size
    with file.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"it has {size} bytes, too short for a header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return "its header is longer than the file (truncated)"
        try:
            header = json.loads(fh.read(length))
        except ValueError:
            return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    if ends and max(ends) > size - 8 - length:
        return f"it is truncated (its tensors need {8 + length + max(ends)} bytes, the file has {size})"
    return None
