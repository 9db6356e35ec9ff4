"""Load a tokenizer and a causal LM as the config asks, then attach adapters for training or inference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.config import ModelArguments
from tuneforge.model import hub
from tuneforge.model.folder import check_tokenizer_files
from tuneforge.model.sources import resolve_model_path
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import warn

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def model_path(args: ModelArguments) -> Path:
    """The local folder of `model_name_or_path` (downloaded from a hub when it is a repo id)."""
    return resolve_model_path(
        args.model_name_or_path,
        args.cache_dir,
        args.model_revision,
        args.hf_hub_token,
        args.ms_hub_token,
        args.trust_remote_code,
        args.gguf_file,
    )


def with_local_adapters(args: ModelArguments) -> ModelArguments:
    """`args` with every hub id in adapter_name_or_path replaced by its downloaded folder; a local entry that
    is not an adapter folder is a sentence naming it."""
    for entry in args.adapter_name_or_path or []:
        path = Path(entry).expanduser()
        if hub.looks_like_repo_id(entry):
            continue
        if not path.is_dir():
            raise UserError(
                f"adapter {entry} does not exist; adapter_name_or_path names folders written by LoRA, OFT or prompt "
                "runs (their output_dir), or hub ids like org/name"
            )
        if not (path / "adapter_config.json").is_file():
            raise UserError(
                f"{entry} has no adapter_config.json, so it is not an adapter; the output of a full or freeze run "
                "is a whole model: give it as model_name_or_path instead"
            )
    if not args.adapter_name_or_path or not any(map(hub.looks_like_repo_id, args.adapter_name_or_path)):
        return args
    local = [
        str(local_adapter(a, args)) if hub.looks_like_repo_id(a) else a for a in args.adapter_name_or_path
    ]
    return args.model_copy(update={"adapter_name_or_path": local})


def local_adapter(name_or_path: str, args: ModelArguments) -> Path:
    """An adapter folder: a local path as given, a hub id downloaded (adapter weights and config only)."""
    if not hub.looks_like_repo_id(name_or_path):
        return Path(name_or_path)
    snapshot = hub.fetch(
        name_or_path, "main", args.cache_dir, args.hf_hub_token, args.ms_hub_token, args.trust_remote_code
    )
    return hub.check_snapshot(snapshot, name_or_path, adapter=True)


def load_tokenizer(args: ModelArguments) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token set (the EOS token when the model defines none)."""
    from transformers import AutoTokenizer

    path = model_path(args)
    check_tokenizer_files(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def attention_implementation(choice: str) -> str:
    """transformers' attn_implementation for `flash_attn`; FlashAttention asked for where it cannot run
    falls back to SDPA with a warning, as LLaMA-Factory does, instead of failing after the data loaded."""
    import torch

    flash = {"fa2": ("flash_attention_2", "flash_attn"), "fa3": ("flash_attention_3", "flash_attn_interface")}
    if choice in flash:
        implementation, package = flash[choice]
        if torch.cuda.is_available() and importlib_available(package):
            return implementation
        why = "needs a CUDA device" if not torch.cuda.is_available() else f"needs the {package} package"
        warn(f"flash_attn: {choice} {why}; using SDPA attention instead")
        return "sdpa"
    if choice == "disabled":
        return "eager"
    if choice == "auto" and torch.cuda.is_available() and importlib_available("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def use_packed_attention(model: object) -> bool:
    """Training models on SDPA attend packed rows row by row (model/packed_attention.py) where their attention is
    plain causal; True when switched."""
    from tuneforge.model import packed_attention

    config = model.config  # type: ignore[attr-defined]
    if getattr(config, "_attn_implementation", None) != "sdpa" or not packed_attention.usable(config):
        return False
    try:
        model.set_attn_implementation(packed_attention.register())  # type: ignore[attr-defined]
    except (ValueError, ImportError):  # a remote-code model without transformers' attention interface
        return False
    return True


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

    path = model_path(args)
    vision_language = vision_config(args) is not None
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
    if vision_language:
        if head == "score":
            raise UserError("reward models (a scoring head) are built on text-only models; pick a text model")
        from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM

        from tuneforge.model.vision import is_audio_language

        audio = is_audio_language(vision_config(args))
        auto = AutoModelForMultimodalLM if audio else AutoModelForImageTextToText  # type: ignore[assignment]
    model = auto.from_pretrained(
        path,
        dtype=dtype or torch.float32,
        trust_remote_code=args.trust_remote_code,
        attn_implementation=attention_implementation(args.flash_attn),
        **extra,
    )
    if for_training and args.flash_attn == "auto":  # `flash_attn: sdpa` keeps transformers' SDPA as it is
        use_packed_attention(model)
    if quantization is not None and for_training:
        from peft import prepare_model_for_kbit_training

        # float32 norms and head, inputs that carry gradients into the frozen quantized layers
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def vision_config(args: ModelArguments) -> object | None:
    """The model's config when it is a vision-language model tuneforge trains, None for text-only models;
    an unsupported vision-language architecture is refused in a sentence."""
    from transformers import AutoConfig

    from tuneforge.model.vision import check_vision_model, is_vision_language

    path = model_path(args)
    if not (path / "config.json").is_file():  # e.g. a GGUF converted on the fly: text-only
        return None
    config = AutoConfig.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    check_vision_model(config)
    return config if is_vision_language(config) else None


def load_image_processor(args: ModelArguments) -> tuple[object, object] | None:
    """(config, image processor) of a vision-language model, (config, feature extractor) of an audio-language
    one, None for a text-only one. Without torchvision, transformers picks its PIL image processors."""
    config = vision_config(args)
    if config is None:
        return None
    from transformers import AutoFeatureExtractor, AutoImageProcessor

    from tuneforge.model.vision import is_audio_language

    audio = is_audio_language(config)
    auto = AutoFeatureExtractor if audio else AutoImageProcessor
    path = model_path(args)
    try:
        processor = auto.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        what = "audio feature extractor" if audio else "image processor"
        raise UserError(
            f"{args.model_name_or_path} is a multimodal model but its {what} cannot be loaded ({err}); "
            "the model folder needs preprocessor_config.json"
        ) from None
    return config, processor


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
