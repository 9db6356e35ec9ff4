"""Load a tokenizer and a causal LM as the config asks, then attach adapters for training or inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.config import ModelArguments
from tuneforge.model.zoo import resolve_model_path

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_tokenizer(args: ModelArguments) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token set (the EOS token when the model defines none)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(args.model_name_or_path, args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def attention_implementation(choice: str) -> str:
    import torch

    if choice != "auto":
        return {"fa2": "flash_attention_2"}.get(choice, choice)
    if torch.cuda.is_available() and importlib_available("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def importlib_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_model(args: ModelArguments, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The base causal LM (no adapters) in `dtype` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(args.model_name_or_path, args.cache_dir)
    return AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype or torch.float32,
        trust_remote_code=args.trust_remote_code,
        attn_implementation=attention_implementation(args.flash_attn),
    )


def load_for_inference(args: ModelArguments, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Base model with `adapter_name_or_path` applied and merged, in eval mode."""
    model = load_model(args, dtype)
    if args.adapter_name_or_path:
        from peft import PeftModel

        for adapter in args.adapter_name_or_path:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    return model
