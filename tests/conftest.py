"""Shared fixtures: an isolated TUNEFORGE_HOME, the embedded SmolLM2 (converted once per checkout), tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# A cache inside the checkout: a fresh clone converts the GGUF for real, later runs reuse it.
TEST_HOME = Path(os.environ.get("TUNEFORGE_TEST_HOME", REPO / ".cache" / "test-home"))
os.environ["TUNEFORGE_HOME"] = str(TEST_HOME)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors directory."""
    from tuneforge.model.sources import resolve_model_path

    return resolve_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer) -> Path:
    """A tiny random LLaMA saved with SmolLM2's tokenizer, so whole training runs take seconds."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_llama(vocab_size=len(smollm2_tokenizer), pad_token_id=smollm2_tokenizer.pad_token_id)
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path
