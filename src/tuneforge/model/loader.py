"""Load a tokenizer and a causal LM as the config asks, then attach adapters for training or inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.config import ModelArguments
from tuneforge.model.zoo import resolve_model_path
from tuneforge.utils.errors import UserError

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


def quantization_config(args: ModelArguments) -> object | None:
    """bitsandbytes settings for `quantization_bit`, or None. Works on CUDA and (bitsandbytes >= 0.48) on CPU."""
    if not args.quantization_bit:
        return None
    import torch

    if not importlib_available("bitsandbytes"):
        raise UserError(
            f"quantization_bit: {args.quantization_bit} needs bitsandbytes: pip install 'bitsandbytes>=0.48'"
        )
    from transformers import BitsAndBytesConfig

    if args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=args.quantization_type,
        bnb_4bit_use_double_quant=args.double_quantization,
        # bf16 matmuls are fast on GPUs and very slow on most CPUs
        bnb_4bit_compute_dtype=torch.bfloat16 if cuda_bf16 else torch.float32,
    )


def load_model(
    args: ModelArguments, dtype: torch.dtype | None = None, for_training: bool = False, head: str = "lm"
) -> PreTrainedModel:
    """The base causal LM (no adapters) in `dtype` (default float32), quantized if `quantization_bit` says so.

    `head="score"`: the same body with a one-output scoring head on the last token (reward models);
    the head is new unless the checkpoint has one.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model_path(args.model_name_or_path, args.cache_dir)
    quantization = quantization_config(args)
    extra: dict[str, object] = {}
    if quantization is not None and args.quantization_bit == 4 and not torch.cuda.is_available():
        _check_cpu_4bit(path, args.trust_remote_code)
    if quantization is not None:
        extra = {
            "quantization_config": quantization,
            "device_map": {"": 0 if torch.cuda.is_available() else "cpu"},
        }
    if head == "score":
        extra["num_labels"] = 1
    auto = AutoModelForSequenceClassification if head == "score" else AutoModelForCausalLM
    model = auto.from_pretrained(
        path,
        dtype=dtype or torch.float32,
        trust_remote_code=args.trust_remote_code,
        attn_implementation=attention_implementation(args.flash_attn),
        **extra,
    )
    if quantization is not None and for_training:
        from peft import prepare_model_for_kbit_training

        # float32 norms and head, inputs that carry gradients into the frozen quantized layers
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def _check_cpu_4bit(path: object, trust_remote_code: bool) -> None:
    """bitsandbytes' CPU backend quantizes in blocks of 64 inputs; smaller layers fail deep inside it."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    sizes = {k: getattr(config, k, None) for k in ("hidden_size", "intermediate_size")}
    odd = {k: v for k, v in sizes.items() if isinstance(v, int) and v % 64}
    if odd:
        shown = ", ".join(f"{k}={v}" for k, v in odd.items())
        raise UserError(
            f"quantization_bit: 4 on CPU needs layer sizes that are multiples of 64 (this model has {shown}); "
            "use quantization_bit: 8, a GPU, or no quantization"
        )


def load_for_inference(args: ModelArguments, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Base model with `adapter_name_or_path` applied (merged where the method allows), in eval mode."""
    model = load_model(args, dtype)
    if args.adapter_name_or_path:
        from peft import PeftConfig, PeftModel

        quantized = args.quantization_bit is not None
        for adapter in args.adapter_name_or_path:
            model = PeftModel.from_pretrained(model, adapter)
            # Prompt methods add virtual tokens (nothing to merge); quantized weights cannot absorb a delta.
            config = PeftConfig.from_pretrained(adapter)
            if config.is_prompt_learning:
                from tuneforge.model.patches import peft_prompt_generation

                peft_prompt_generation.apply(model)
            elif not quantized:
                model = model.merge_and_unload()
    model.eval()
    return model
