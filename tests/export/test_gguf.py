"""GGUF export: read back by transformers' GGUF loader (and by llama.cpp when llama-cpp-python is
installed), the logits, greedy answers and tokenization equal those of the merged model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.export.test_export import export, random_adapter
from tests.helpers import tiny_llama, tiny_tokenizer
from tuneforge.utils.errors import UserError

TEXT = "Mixed text: hello, 世界! 🙂 Ünïcode 12345 <|im_start|>user"


def load_back(out: Path, tokenizer: bool = True):
    """(model, tokenizer or None, path) read back by transformers' GGUF loader (each read parses the whole
    file's metadata, seconds for a 49k vocabulary: skip the tokenizer where the test does not use it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (gguf,) = out.glob("*.gguf")
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(out, gguf_file=gguf.name) if tokenizer else None, gguf


def merged(base: Path, adapters: list[Path]):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval()


def question_ids(tokenizer) -> torch.Tensor:
    """`[1, n]` prompt ids of one chat question, as the tokenizer's own template renders it."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
    )
    return prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]


def greedy(model, ids: torch.Tensor, n: int = 32) -> list[int]:
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def small_tokenizer():
    """tests.helpers' byte-level BPE of 300 tokens with ChatML: every read of a GGUF file parses its whole
    vocabulary (seconds for SmolLM2's 49,152 tokens, twice per transformers load), which the tests of tensors need
    not pay; SmolLM2's own vocabulary is checked on the SmolLM2 exports."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def gqa_model_dir(tmp_path_factory, small_tokenizer) -> Path:
    """A tiny LLaMA with grouped-query attention (4 query heads, 2 key/value heads) and the small tokenizer."""
    path = tmp_path_factory.mktemp("gqa")
    model = tiny_llama(
        vocab_size=len(small_tokenizer),
        pad_token_id=small_tokenizer.pad_token_id,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model.save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("kind", "limit"),
    [("f32", 1e-4), ("f16", 5e-3), ("bf16", 5e-2), ("q8_0", 5e-2), ("q4_0", 0.5), ("q4_1", 0.5)],
)
def test_gguf_of_base_plus_adapter_matches_the_merged_model(
    kind, limit, gqa_model_dir, tmp_path, small_tokenizer
):
    adapter = random_adapter(gqa_model_dir, tmp_path / "a", 1)
    out = export(
        tmp_path, gqa_model_dir, [adapter], export_format="gguf", export_gguf_type=kind, template="qwen"
    )
    model, tokenizer, gguf = load_back(out, tokenizer=kind == "f32")
    reference = merged(gqa_model_dir, [adapter])
    ids = small_tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert (model(ids).logits - reference(ids).logits).abs().max() < limit
    if kind != "f32":  # the metadata below is written by the same code whatever the tensors' type
        return
    assert greedy(model, ids) == greedy(reference, ids)
    assert tokenizer(TEXT).input_ids == small_tokenizer(TEXT).input_ids
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    assert "<|im_start|>" in template  # the named template the run used (qwen: ChatML), as Jinja
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{gguf.name}\n") and 'TEMPLATE """' in modelfile


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_qwen_architectures_round_trip(family, tmp_path, small_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        family,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # transformers' GGUF loader ignores qwen3's attention.key_length and assumes Qwen3's default head_dim
        # (128), which llama.cpp reads from the file; the tiny Qwen3 uses that width so both read it alike
        head_dim=8 if family == "qwen2" else 128,
        vocab_size=len(small_tokenizer),
        max_position_embeddings=256,
    )
    base = tmp_path / family
    model = AutoModelForCausalLM.from_config(config)
    for name, param in model.named_parameters():  # qwen2's q/k/v biases start at zero: give them values
        if name.endswith("bias") or "norm" in name:
            param.data.normal_(0, 0.5)
    model.save_pretrained(base)
    small_tokenizer.save_pretrained(base)
    out = export(tmp_path, base, [], export_format="gguf", export_gguf_type="f32")
    back, _, _ = load_back(out, tokenizer=False)
    ids = small_tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert (back(ids).logits - model.eval()(ids).logits).abs().max() < 1e-4


def test_architectures_the_converter_does_not_know_are_refused(tmp_path, smollm2_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(smollm2_tokenizer))
    ).save_pretrained(base)
    smollm2_tokenizer.save_pretrained(base)
    with pytest.raises(UserError, match="models; this is gpt2"):
        export(tmp_path, base, [], export_format="gguf")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".partial-*"))


@pytest.fixture(scope="module")
def smollm2_adapted(smollm2_dir, smollm2_tokenizer, tmp_path_factory):
    """(adapter, question ids, merged model, its logits and 32-token greedy answer) of SmolLM2 with one small
    random adapter, computed once for the exports of this module."""
    adapter = random_adapter(smollm2_dir, tmp_path_factory.mktemp("adapter") / "a", 1, scale=0.05)
    reference = merged(smollm2_dir, [adapter])
    ids = question_ids(smollm2_tokenizer)
    with torch.no_grad():
        logits = reference(ids).logits
    return adapter, ids, reference, logits, greedy(reference, ids)


@pytest.mark.slow
@pytest.mark.parametrize(("gguf_type", "tolerance"), [("f32", 1e-4), ("f16", 5e-2)])
def test_gguf_of_smollm2_with_an_adapter_answers_like_the_merged_model(
    gguf_type, tolerance, smollm2_dir, smollm2_tokenizer, smollm2_adapted, tmp_path
):
    """f32 is exact; f16 rounds each weight to 11 significant bits, a few hundredths on logits of size ~20."""
    adapter, ids, _, logits, answer = smollm2_adapted
    out = export(tmp_path, smollm2_dir, [adapter], export_format="gguf", export_gguf_type=gguf_type)
    model, tokenizer, gguf = load_back(out, tokenizer=gguf_type == "f32")
    with torch.no_grad():
        difference = (model(ids).logits - logits).abs().max()
        print(f"{gguf_type}: max |logit difference| {float(difference):.2e}")
        assert difference < tolerance
    assert greedy(model, ids) == answer
    if tokenizer is not None:  # the same vocabulary whatever the tensors' type
        assert tokenizer(TEXT).input_ids == smollm2_tokenizer(TEXT).input_ids


REPO = Path(__file__).resolve().parents[2]
BENCH_PYTHON = (
    REPO / ".bench" / "llamacpp-venv" / "bin" / "python"
)  # `python bench/gguf_llamacpp.py` builds it
LLAMA_CPP = """
import json, sys
from llama_cpp import Llama
path, ids, text = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
out = []
for token in llm.generate(ids, top_k=1, temp=0.0):
    out.append(token)
    if len(out) == 32:
        break
print(json.dumps({"tokens": out, "ids": llm.tokenize(text.encode(), add_bos=False, special=True)}))
"""


def llama_cpp_python() -> str | None:
    """A Python that has llama-cpp-python: this one, or the venv the bench script builds."""
    if importlib.util.find_spec("llama_cpp") is not None:
        import sys

        return sys.executable
    return str(BENCH_PYTHON) if BENCH_PYTHON.exists() else None


@pytest.mark.slow
@pytest.mark.skipif(
    llama_cpp_python() is None, reason="llama-cpp-python is not installed (bench/gguf_llamacpp.py builds it)"
)
def test_llama_cpp_answers_the_gguf_export_like_the_merged_model(
    smollm2_dir, smollm2_tokenizer, smollm2_adapted, tmp_path
):
    import json
    import subprocess

    adapter, ids, reference, _, _ = smollm2_adapted
    out = export(tmp_path, smollm2_dir, [adapter], export_format="gguf", export_gguf_type="f32")
    (gguf,) = out.glob("*.gguf")
    result = subprocess.run(
        [llama_cpp_python(), "-c", LLAMA_CPP, str(gguf), json.dumps(ids[0].tolist()), TEXT],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["ids"] == smollm2_tokenizer(TEXT).input_ids
    with torch.no_grad():  # the answer up to and including its end-of-turn token, as llama.cpp ends it
        expected = reference.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1] :].tolist()
    eos = smollm2_tokenizer.eos_token_id
    answer = got["tokens"][: got["tokens"].index(eos) + 1] if eos in got["tokens"] else got["tokens"]
    assert answer == expected and len(answer) > 3


def sentencepiece_tokenizer(corpus: list[str]):
    """A tokenizer laid out as LLaMA 2's tokenizer.json is: <unk>, <s>, </s>, the 256 <0xNN> byte tokens, then
    BPE pieces with "▁" for spaces (prepended to the text) and byte fallback for characters it never saw."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trained.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # pieces within words only
    trained.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, show_progress=False))
    learned = json.loads(trained.to_str())["model"]
    fixed = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    vocab = {token: i for i, token in enumerate(fixed)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = trained.normalizer
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return LlamaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True
    )


CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Fine-tuning a language model with LoRA changes a few low-rank matrices.",
    "Numbers like 12345 and 2026 appear in text; so do questions? Yes!",
] * 20


def test_sentencepiece_vocabularies_are_written_with_scores_and_byte_fallback(tmp_path):
    """LLaMA 2 / Mistral-style tokenizers: transformers' GGUF loader rebuilds the same tokenizer from the file
    (ids equal on text with unseen Chinese and emoji, which fall back to bytes) and the logits match."""
    tokenizer = sentencepiece_tokenizer(CORPUS)
    base = tmp_path / "spm"
    model = tiny_llama(vocab_size=len(tokenizer), pad_token_id=0)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = export(tmp_path, base, [], export_format="gguf", export_gguf_type="f32", template="llama2")
    back, back_tokenizer, gguf_path = load_back(out)
    assert any(3 <= i < 259 for i in tokenizer(TEXT).input_ids)  # unseen characters fall back to bytes
    # (no leading spaces: transformers' GGUF reader prepends "▁" only to text not already starting with one,
    # where llama.cpp and the original tokenizer always prepend it)
    for text in (TEXT, CORPUS[0], "two  spaces, then\nnew lines\n\nand tabs\t."):
        expected = tokenizer(text).input_ids
        assert back_tokenizer(text).input_ids == expected, text
        assert back_tokenizer.decode(expected, skip_special_tokens=True) == tokenizer.decode(
            expected, skip_special_tokens=True
        )
    ids = torch.tensor([tokenizer(TEXT).input_ids])
    with torch.no_grad():
        assert (back(ids).logits - model.eval()(ids).logits).abs().max() < 1e-4
    from gguf import GGUFReader

    fields = GGUFReader(gguf_path).fields
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "llama"
    assert bool(fields["tokenizer.ggml.add_space_prefix"].parts[-1][0])
    assert bool(fields["tokenizer.ggml.add_bos_token"].parts[-1][0]) and expected[0] == tokenizer.bos_token_id


LLAMA_CPP_TOKENIZE = """
import json, sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
print(json.dumps([llm.tokenize(t.encode(), add_bos=True, special=False) for t in json.loads(sys.argv[2])]))
"""


@pytest.mark.skipif(
    llama_cpp_python() is None, reason="llama-cpp-python is not installed (bench/gguf_llamacpp.py builds it)"
)
def test_llama_cpp_tokenizes_a_sentencepiece_export_as_the_original(tmp_path):
    """llama.cpp's own SentencePiece tokenizer on the written scores: the same ids, leading spaces included."""
    import subprocess

    tokenizer = sentencepiece_tokenizer(CORPUS)
    base = tmp_path / "spm"
    tiny_llama(vocab_size=len(tokenizer), pad_token_id=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = export(tmp_path, base, [], export_format="gguf", export_gguf_type="f32", template="llama2")
    texts = [TEXT, *CORPUS[:3], "  two  spaces, then\nnew lines\n\nand tabs\t."]
    (gguf,) = out.glob("*.gguf")
    result = subprocess.run(
        [llama_cpp_python(), "-c", LLAMA_CPP_TOKENIZE, str(gguf), json.dumps(texts)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [tokenizer(t).input_ids for t in texts]


def gguf_tensors(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    return {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(path).tensors}


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_gguf_lora_on_the_base_gguf_adds_up_to_the_merged_gguf(rslora, gqa_model_dir, tmp_path):
    """llama.cpp adds alpha / rank * B @ A to each named base tensor: done by hand on the written files it
    gives the merged export's tensors, q/k rows interleaved alike, every adapted tensor covered."""
    from gguf import GGUFReader

    adapter = random_adapter(
        gqa_model_dir,
        tmp_path / "a",
        1,
        use_rslora=rslora,
        target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
    )
    base = gguf_tensors(
        next(
            export(tmp_path / "b", gqa_model_dir, [], export_format="gguf", export_gguf_type="f32").glob(
                "*.gguf"
            )
        )
    )
    merged_file = export(
        tmp_path / "m", gqa_model_dir, [adapter], export_format="gguf", export_gguf_type="f32"
    )
    merged_tensors = gguf_tensors(next(merged_file.glob("*.gguf")))
    out = export(tmp_path / "l", gqa_model_dir, [adapter], export_format="gguf_lora")
    (lora_file,) = out.glob("*.gguf")
    lora = gguf_tensors(lora_file)
    fields = GGUFReader(lora_file).fields
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    alpha = float(fields["adapter.lora.alpha"].parts[-1][0])
    adapted = {name.removesuffix(".lora_a") for name in lora if name.endswith(".lora_a")}
    assert len(adapted) == 4 * 2  # four projections in each of the two layers
    for name, weight in base.items():
        if name in adapted:
            a, b = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"]
            weight = weight + alpha / a.shape[0] * (b @ a)
        assert np.abs(weight - merged_tensors[name]).max() < 1e-5, name
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM {gqa_model_dir.resolve()}" in modelfile and f"ADAPTER ./{lora_file.name}" in modelfile


def test_gguf_lora_refuses_what_llama_cpp_cannot_add(gqa_model_dir, tmp_path):
    dora = random_adapter(gqa_model_dir, tmp_path / "d", 1, use_dora=True)
    plain = random_adapter(gqa_model_dir, tmp_path / "p", 2)
    with pytest.raises(UserError, match="DoRA's magnitude vectors"):
        export(tmp_path, gqa_model_dir, [dora], export_format="gguf_lora")
    with pytest.raises(UserError, match="writes one adapter; 2 are given"):
        export(tmp_path, gqa_model_dir, [plain, plain], export_format="gguf_lora")
    assert not (tmp_path / "out").exists()


LLAMA_CPP_LORA = """
import json, sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], lora_path=sys.argv[2], n_ctx=512, n_threads=2, verbose=False)
out = []
for token in llm.generate(json.loads(sys.argv[3]), top_k=1, temp=0.0):
    out.append(token)
    if len(out) == 32:
        break
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    llama_cpp_python() is None, reason="llama-cpp-python is not installed (bench/gguf_llamacpp.py builds it)"
)
def test_llama_cpp_with_the_gguf_lora_answers_like_the_merged_model(smollm2_dir, smollm2_tokenizer, tmp_path):
    import subprocess

    adapter = random_adapter(smollm2_dir, tmp_path / "a", 1, scale=0.05)
    base = export(tmp_path / "b", smollm2_dir, [], export_format="gguf", export_gguf_type="f32")
    lora = export(tmp_path / "l", smollm2_dir, [adapter], export_format="gguf_lora")
    ids = question_ids(smollm2_tokenizer)
    result = subprocess.run(
        [llama_cpp_python(), "-c", LLAMA_CPP_LORA, str(next(base.glob("*.gguf"))), str(next(lora.glob("*.gguf"))),
         json.dumps(ids[0].tolist())],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    got = json.loads(result.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        expected = merged(smollm2_dir, [adapter]).generate(ids, max_new_tokens=32, do_sample=False)
    expected = expected[0, ids.shape[1] :].tolist()
    eos = smollm2_tokenizer.eos_token_id
    answer = got[: got.index(eos) + 1] if eos in got else got
    assert answer == expected and len(answer) > 3


LLAMA_CPP_QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3].upper())
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    llama_cpp_python() is None, reason="llama-cpp-python is not installed (bench/gguf_llamacpp.py builds it)"
)
def test_quantized_exports_are_byte_identical_to_llama_cpps_own_quantizer(smollm2_dir, tmp_path):
    """SmolLM2 exported as q8_0, q4_0 and q4_1 equals llama.cpp quantizing the f32 export: every tensor, byte
    for byte, the 8-bit output projection of the 4-bit files included."""
    import subprocess

    from gguf import GGUFReader

    f32 = next(
        export(tmp_path / "f32", smollm2_dir, [], export_format="gguf", export_gguf_type="f32").glob("*.gguf")
    )
    for kind in ("q8_0", "q4_0", "q4_1"):
        ours = next(
            export(tmp_path / kind, smollm2_dir, [], export_format="gguf", export_gguf_type=kind).glob(
                "*.gguf"
            )
        )
        theirs = tmp_path / f"llama-cpp-{kind}.gguf"
        subprocess.run(
            [llama_cpp_python(), "-c", LLAMA_CPP_QUANTIZE, str(f32), str(theirs), kind],
            capture_output=True, check=True, timeout=600,
        )  # fmt: skip
        mine = {t.name: t for t in GGUFReader(ours).tensors}
        other = {t.name: t for t in GGUFReader(theirs).tensors}
        assert mine.keys() == other.keys()
        for name, tensor in mine.items():
            assert tensor.tensor_type == other[name].tensor_type, (kind, name)
            assert np.array_equal(np.asarray(tensor.data), np.asarray(other[name].data)), (kind, name)
        ours.unlink()
        theirs.unlink()
