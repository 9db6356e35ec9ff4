"""A transformers causal LM and its tokenizer written as one GGUF file, with the `gguf` package's writer.

Written from the GGUF specification (github.com/ggml-org/ggml/blob/master/docs/gguf.md) for the LLaMA,
Mistral, Qwen2 and Qwen3 architectures: architecture
metadata under `ARCH.*`, the tokenizer under `tokenizer.ggml.*` and `tokenizer.chat_template`, tensors
under llama.cpp's names (`token_embd`, `blk.N.attn_q`, ...). For the LLaMA architecture llama.cpp applies
rotary embeddings to interleaved pairs where transformers rotates halves, so the rows of the query and
key projections are reordered within each head (`_interleave_heads`); transformers' GGUF loader undoes
exactly that, which is how the tests check the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.utils.errors import UserError

# transformers model_type -> (the GGUF architecture it is written as, whether q/k rows are interleaved for
# llama.cpp's rotary embedding: the LLaMA family yes; Qwen's NEOX-style rotation takes halves as they are)
ARCHITECTURES = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1")

_LAYER_TENSORS = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",  # qwen2
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",  # qwen3
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_TOP_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(name: str) -> str | None:
    """llama.cpp's name of a transformers LLaMA tensor, or None when the converter does not map it."""
    if name in _TOP_TENSORS:
        return _TOP_TENSORS[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_TENSORS:
        return f"blk.{parts[2]}.{_LAYER_TENSORS[parts[3]]}"
    return None


def _interleave_heads(weight: Any, heads: int) -> Any:
    """Rows of a q/k projection `[heads * head_dim, hidden]` reordered per head from (first half, second half)
    to interleaved pairs, as llama.cpp's rotary embedding expects."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


# The split patterns of tokenizers llama.cpp knows by name (as their tokenizer.json files write them).
_SPLIT_PATTERNS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def _pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the text splitting before BPE: GPT-2's byte-level regex, with digits split one by
    one first (SmolLM's), or the split patterns of LLaMA 3 and Qwen2."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") in _SPLIT_PATTERNS:
        return _SPLIT_PATTERNS[steps[0]["pattern"]["Regex"]]
    raise UserError(
        f"the tokenizer splits text with {kinds}, which this GGUF converter cannot name for llama.cpp; export "
        "export_format: safetensors and convert it with llama.cpp's own script"
    )


def _steps(part: dict[str, Any] | None, kind: str) -> list[dict[str, Any]]:
    """The steps of a tokenizer.json normalizer or pre-tokenizer (a Sequence or a single step)."""
    part = part or {}
    return part.get(kind, [part]) if part.get("type") == "Sequence" else [part]


def _sentencepiece_style(backend: dict[str, Any]) -> bool | None:
    """For a SentencePiece BPE vocabulary (spaces as "▁", unknown characters as <0xNN> bytes: LLaMA 1/2,
    Mistral, Baichuan, Yi), whether a "▁" goes in front of the text (add_space_prefix); None otherwise."""
    model = backend.get("model", {})
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return None
    normalizers = _steps(backend.get("normalizer"), "normalizers")
    metaspace = [
        p for p in _steps(backend.get("pre_tokenizer"), "pretokenizers") if p.get("type") == "Metaspace"
    ]
    if metaspace:
        return metaspace[0].get("prepend_scheme", "always") != "never" and metaspace[0].get(
            "add_prefix_space", True
        )
    if any(n.get("type") == "Replace" and n.get("content") == "\u2581" for n in normalizers):
        return any(n.get("type") == "Prepend" for n in normalizers)
    return None


def _merge_ranks(merges: list[Any]) -> dict[str, int]:
    """Each token a merge produces, with the rank of the first merge producing it."""
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    return ranks


def _add_tokenizer(writer: Any, tokenizer: Any, chat_template: str | None) -> None:
    """Byte-level BPE (GPT-2 style: tokenizer model "gpt2" with merges) or SentencePiece BPE (tokenizer model
    "llama": tokens with scores; llama.cpp merges the adjacent pair whose join scores highest, so a token's
    score is minus the rank of the merge that makes it, which replays the merges in their order)."""
    import gguf

    backend = (
        json.loads(tokenizer.backend_tokenizer.to_str()) if hasattr(tokenizer, "backend_tokenizer") else {}
    )
    model = backend.get("model", {})
    space_prefix = _sentencepiece_style(backend)
    if model.get("type") != "BPE" or not isinstance(model.get("merges"), list):
        raise UserError(
            f"this GGUF converter writes BPE tokenizers (byte-level or SentencePiece); {type(tokenizer).__name__} is "
            f"{model.get('type') or 'another kind'} (export with export_format: safetensors instead)"
        )
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, index in vocab.items():
        tokens[index], types[index] = text, gguf.TokenType.NORMAL
    for added in backend.get("added_tokens", []):
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    if space_prefix is None:
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer(backend))
        writer.add_token_merges(merges)
    else:
        ranks = _merge_ranks(model["merges"])
        scores = [-float(ranks.get(t, len(ranks) + i)) for i, t in enumerate(tokens)]
        for i, text in enumerate(tokens):
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                types[i] = gguf.TokenType.BYTE
        if model.get("unk_token") in vocab:
            types[vocab[model["unk_token"]]] = gguf.TokenType.UNKNOWN
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    # what encoding really does (a post-processor may add BOS whatever the add_bos_token attribute says)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id])
    writer.add_add_space_prefix(bool(space_prefix))
    if chat_template:
        writer.add_chat_template(chat_template)


def _tensor_data(name: str, tensor: Any, gguf_type: str) -> tuple[Any, Any]:
    """(numpy data, GGML type) of one tensor in the requested type; norms and other 1-D tensors stay f32."""
    import gguf
    import numpy as np

    data = tensor.detach().to("cpu").float().numpy()
    if data.ndim < 2 or gguf_type == "f32":
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if gguf_type == "f16":
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16
    qtype = getattr(gguf.GGMLQuantizationType, gguf_type.upper())
    if qtype != gguf.GGMLQuantizationType.BF16 and data.shape[-1] % 32:
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16  # q8_0/q4_* pack rows in blocks of 32
    return gguf.quants.quantize(data, qtype), qtype


def write_gguf(
    model: Any, tokenizer: Any, chat_template: str | None, path: Path, gguf_type: str, name: str
) -> None:
    """Write `model` (a transformers LLaMA-family causal LM, float weights) and its tokenizer to `path`."""
    import gguf

    config = model.config
    arch, interleave = ARCHITECTURES.get(config.model_type, (None, False))
    if arch is None:
        raise UserError(
            f"the GGUF export writes {', '.join(sorted(ARCHITECTURES))} models; this is {config.model_type} "
            f"({type(model).__name__}); export with export_format: safetensors instead"
        )
    scaling = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if scaling.get("rope_type", "default") not in ("default", None):
        raise UserError(f"rope scaling {scaling.get('rope_type')} is not written by the GGUF export yet")
    heads, kv_heads = (
        config.num_attention_heads,
        getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
        "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
    }
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:  # Qwen3 and others with wider or narrower heads
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(scaling.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_types[gguf_type])
    _add_tokenizer(writer, tokenizer, chat_template)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue
        target = gguf_name(key)
        if target is None:
            raise UserError(f"the GGUF export has no llama.cpp name for the tensor {key} of this model")
        if interleave and target.endswith(("attn_q.weight", "attn_q.bias")):
            tensor = _interleave_heads(tensor, heads)
        elif interleave and target.endswith(("attn_k.weight", "attn_k.bias")):
            tensor = _interleave_heads(tensor, kv_heads)
        # the output projection (the tied embedding when there is none) stays at 8 bits in 4-bit files, as
        # llama.cpp's own quantizer keeps it (at q6_K where rows allow; the gguf package writes no k-quants)
        output = target == "output.weight" or (tied and target == "token_embd.weight")
        data, qtype = _tensor_data(
            target, tensor, "q8_0" if output and gguf_type in ("q4_0", "q4_1") else gguf_type
        )
        writer.add_tensor(target, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
