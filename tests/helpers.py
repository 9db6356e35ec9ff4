"""Tiny in-process models for tests that must run in well under a second."""

from __future__ import annotations

# Sizes shared by every tiny decoder the tests build (LLaMA here, other families in tests/model).
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def tiny_llama_config(vocab_size: int = 128, **overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**{**TINY, "vocab_size": vocab_size, **overrides})


def tiny_llama(vocab_size: int = 128, seed: int = 0, **overrides):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(
        tiny_llama_config(vocab_size, **overrides), attn_implementation="sdpa"
    )


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in-process on a few sentences, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [
        "Hello there, how can I help you today?",
        "The capital of France is Paris.",
        "写一首诗。春眠不觉晓。",
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
    )


QWEN_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_VISION = dict(depth=2, hidden_size=32, num_heads=4, spatial_merge_size=2)
QWEN_VL = {  # family: (config class, vision tower sizes, patch size)
    "qwen2_vl": ("Qwen2VLConfig", {**_VISION, "embed_dim": 32, "mlp_ratio": 2}, 14),
    "qwen2_5_vl": (
        "Qwen2_5_VLConfig",
        {**_VISION, "intermediate_size": 64, "out_hidden_size": 32, "window_size": 56, "fullatt_block_indexes": [1]},
        14,
    ),
    "qwen3_vl": (
        "Qwen3VLConfig",
        {**_VISION, "intermediate_size": 64, "out_hidden_size": 32, "patch_size": 16, "num_position_embeddings": 16,
         "deepstack_visual_indexes": [0]},
        16,
    ),
}  # fmt: skip


def save_tiny_vision_model(path, tokenizer, family: str = "qwen2_vl", seed: int = 0):
    """A tiny random vision-language model saved with `tokenizer` (its image tokens added) and a PIL image
    processor: Qwen2-VL (patches merged 2x2, 3-D rotary positions) or LLaVA 1.5 (CLIP tower, 28x28 input); or
    a tiny Qwen2-Audio (`qwen2_audio`) with a Whisper feature extractor of 2 s windows."""
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = _copy_tokenizer(tokenizer)
    text = {
        k: TINY[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    }
    text.update(num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False)
    if family in QWEN_VL:
        import transformers
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokenizer.add_special_tokens({"additional_special_tokens": QWEN_VL_TOKENS})
        ids = dict(zip(QWEN_VL_TOKENS, tokenizer.convert_tokens_to_ids(QWEN_VL_TOKENS), strict=True))
        config_class, vision, patch = QWEN_VL[family]
        rope = {"rope_type": "default", "mrope_section": [1, 1, 2]}
        config = getattr(transformers, config_class)(
            text_config={**text, "vocab_size": len(tokenizer), "head_dim": 8, "rope_parameters": rope},
            vision_config=vision,
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        processor = Qwen2VLImageProcessorPil(
            patch_size=patch, min_pixels=(2 * patch) ** 2, max_pixels=(2 * patch) ** 2 * 4
        )
    elif family == "llava":
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        config = LlavaConfig(
            text_config=LlamaConfig(**text, vocab_size=len(tokenizer)),
            vision_config=CLIPVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                patch_size=14, projection_dim=32,
            ),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        )  # fmt: skip
        processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    elif family == "llava_next":
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        grid = [[28, 28], [28, 56], [56, 28], [56, 56]]
        config = LlavaNextConfig(
            text_config=LlamaConfig(**text, vocab_size=len(tokenizer)),
            vision_config=CLIPVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                patch_size=14, projection_dim=32,
            ),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=grid,
        )  # fmt: skip
        processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=grid
        )
    elif family == "gemma3":
        from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        marks = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
        tokenizer.add_special_tokens({"additional_special_tokens": marks})
        start, end, soft = tokenizer.convert_tokens_to_ids(marks)
        config = Gemma3Config(
            text_config=Gemma3TextConfig(**text, vocab_size=len(tokenizer), head_dim=8, sliding_window=64),
            vision_config=SiglipVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56,
                patch_size=14,
            ),
            mm_tokens_per_image=4, boi_token_index=start, eoi_token_index=end, image_token_index=soft,
        )  # fmt: skip
        processor = Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
    elif family == "qwen2_audio":
        from transformers import Qwen2AudioConfig, WhisperFeatureExtractor

        marks = ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
        tokenizer.add_special_tokens({"additional_special_tokens": marks})
        # 2 s windows of 16 log-mel bins: 200 frames, which the encoder's convolution halves to 100 positions
        config = Qwen2AudioConfig(
            audio_config={"num_mel_bins": 16, "encoder_layers": 2, "encoder_attention_heads": 4,
                          "encoder_ffn_dim": 64, "d_model": 32, "max_source_positions": 100},
            text_config={**text, "model_type": "qwen2", "vocab_size": len(tokenizer)},
            audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
        )  # fmt: skip
        processor = WhisperFeatureExtractor(
            feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=2
        )
    else:
        raise ValueError(family)
    for where in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
        where.pad_token_id, where.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
        where.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    if family == "qwen2_audio":
        from transformers import AutoModelForMultimodalLM as AutoModelForImageTextToText  # noqa: N814
    model = AutoModelForImageTextToText.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _copy_tokenizer(tokenizer):
    import copy

    return copy.deepcopy(tokenizer)


def write_images(folder, count: int = 3, sizes=((96, 64), (60, 90), (120, 120))):
    """`count` small PNGs of distinct solid colours: (paths relative to folder)."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"img{i}.png"
        Image.new("RGB", sizes[i % len(sizes)], ((70 * i) % 256, (150 + 40 * i) % 256, 200 - 30 * i)).save(
            folder / name
        )
        names.append(name)
    return names


SHADES = {"dark.png": "Dark.", "light.png": "Light."}
SHADE_QUESTION = "Light or dark?"


def shade_images(folder) -> None:
    """A dark and a light noisy 56x56 image (`SHADES` names them and their answers)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, value in (("dark.png", 20), ("light.png", 235)):
        pixels = np.clip(value + rng.normal(0, 10, (56, 56, 3)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / name)


def write_dataset(folder, name: str, rows: list[dict], **entry) -> None:
    """`rows` as a sharegpt dataset with OpenAI-style role tags and an images column, in dataset_info.json."""
    import json

    (folder / f"{name}.json").write_text(json.dumps(rows))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    columns = {"messages": "messages", "images": "images", **entry.pop("columns", {})}
    info = {
        name: {
            "file_name": f"{name}.json",
            "formatting": "sharegpt",
            "columns": columns,
            "tags": tags,
            **entry,
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
