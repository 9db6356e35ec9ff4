"""Loading the engine's model (base + named LoRA adapters) and reading what decoding needs from it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from tuneforge.config import ModelArguments
from tuneforge.config.multimodal import MediaArguments
from tuneforge.model.loader import load_for_inference
from tuneforge.utils.errors import UserError


def _cache_argument() -> str:
    """transformers 5.2x calls the KV cache argument `cache`; earlier releases `past_key_values`."""
    import inspect

    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def __getattr__(name: str) -> Any:
    """`CACHE_ARGUMENT`, read from transformers' LlamaModel on first use: importing the modeling code takes
    seconds, which commands that only need `image_facts` (`tuneforge data validate`) should not pay."""
    if name == "CACHE_ARGUMENT":
        globals()[name] = value = _cache_argument()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_with_adapters(model_args: ModelArguments, adapters: dict[str, str]) -> Any:
    """The base (with `adapter_name_or_path` merged, as in chat) plus each named LoRA adapter, unmerged."""
    model = load_for_inference(model_args)
    if not adapters:
        return model
    from peft import PeftConfig, PeftModel

    for name, path in adapters.items():
        config = PeftConfig.from_pretrained(path)
        if config.peft_type != "LORA":
            raise UserError(
                f"adapter '{name}' ({path}) is {config.peft_type}; named adapters served side by side must be LoRA "
                "(load other kinds with adapter_name_or_path)"
            )
    names = iter(adapters.items())
    first, path = next(names)
    model = PeftModel.from_pretrained(model, path, adapter_name=first)
    for name, path in names:
        model.load_adapter(path, adapter_name=name)
    model.eval()
    return model


def context_length(model: Any) -> int:
    config = model.config.get_text_config()  # a vision-language model's is its language model's
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def image_facts(model_args: ModelArguments, tokenizer: Any, media: MediaArguments | None = None) -> Any:
    """How a vision-language model reads images (`tuneforge.data.visual`), None for a text-only model."""
    from tuneforge.data.visual import vision_family
    from tuneforge.model.loader import load_image_processor

    loaded = load_image_processor(model_args)
    if loaded is None:
        return None
    config, processor = loaded
    return vision_family(config, tokenizer, processor, media or MediaArguments())


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the tokenizer's EOS and every EOS the model's generation config lists."""
    ids: set[int] = set()
    for value in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def parse_adapters(text: str | None) -> dict[str, str]:
    """`name=path,name2=path2` as a dict, checked."""
    adapters: dict[str, str] = {}
    for part in itertools.filterfalse(str.isspace, (text or "").split(",")):
        if not part:
            continue
        name, eq, path = part.partition("=")
        name, path = name.strip(), path.strip()
        if not eq or not name or not path:
            raise UserError(f"--adapters takes name=path pairs separated by commas (got '{part}')")
        if name in adapters:
            raise UserError(f"adapter name '{name}' is given twice")
        if not ADAPTER_NAME.fullmatch(name):
            raise UserError(
                f"adapter name '{name}' may use only letters, digits, '-' and '_' (it becomes the API's model "
                "name and a PEFT adapter name, where dots are not allowed)"
            )
        adapters[name] = path
    return adapters


ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_adapter_folder(name: str, path: str) -> None:
    """A local adapter folder that PEFT can load, or a sentence naming what is missing (hub ids are fetched
    later and checked there)."""
    from tuneforge.model.hub import looks_like_repo_id

    if looks_like_repo_id(path):
        return
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"adapter '{name}': {path} is not a folder (give the output_dir of a training run)")
    if not (folder / "adapter_config.json").is_file():
        raise UserError(
            f"adapter '{name}': {path} has no adapter_config.json, so it is not an adapter (a full or freeze "
            "run's output is a model: serve it as model_name_or_path)"
        )
