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

_last_module: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Keeps full garbage collections short. transformers' Trainer.train runs gc.collect() (accelerate's
    free_memory) and every collection walks every object alive in this process: ~0.5 s each once the suite has
    imported torch, transformers, datasets and many tests' objects, paid by each of the hundreds of training
    runs in this process. Objects alive before a test (after a collection) are frozen, so the collections in a
    test walk only what it made; at each new test module everything is unfrozen and collected once, so garbage
    made by earlier modules' fixtures is still freed."""
    import gc

    module = item.nodeid.split("::", 1)[0]
    if _last_module != [module]:
        _last_module[:] = [module]
        gc.unfreeze()
    gc.collect()
    gc.freeze()


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


@pytest.fixture(scope="session")
def tiny_vision_model(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer):
    """`tiny_vision_model(family)`: the folder of a tiny random vision-language model of that family
    (qwen2_vl, qwen2_5_vl, qwen3_vl, llava) with SmolLM2's tokenizer and a PIL image processor, built once."""
    from tests.helpers import save_tiny_vision_model

    built: dict[str, Path] = {}

    def get(family: str = "qwen2_vl") -> Path:
        if family not in built:
            built[family] = save_tiny_vision_model(tmp_path_factory.mktemp(family), smollm2_tokenizer, family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def shade_reader(tmp_path_factory: pytest.TempPathFactory, tiny_vision_model) -> tuple[Path, Path]:
    """(model folder, data folder): a tiny Qwen2-VL fully tuned to answer "Dark." or "Light." about the two
    images of `tests.helpers.shade_images`, trained once per session (about 12 s)."""
    from tests.helpers import SHADE_QUESTION, SHADES, shade_images, write_dataset
    from tuneforge.config.loader import build_config
    from tuneforge.train.stages import run_stage

    data = tmp_path_factory.mktemp("shades")
    shade_images(data)
    rows = [{"messages": [{"role": "user", "content": f"<image>{SHADE_QUESTION}"},
                          {"role": "assistant", "content": answer}], "images": [image]}
            for image, answer in SHADES.items()] * 4  # fmt: skip
    write_dataset(data, "pics", rows)
    out = tmp_path_factory.mktemp("shade-reader") / "run"
    keys = dict(
        model_name_or_path=str(tiny_vision_model("qwen2_vl")), dataset="pics", dataset_dir=str(data),
        output_dir=str(out), finetuning_type="full", freeze_vision_tower=False, freeze_multi_modal_projector=False,
        learning_rate=1e-2, max_steps=40, per_device_train_batch_size=8, logging_steps=10, save_steps=1000,
        cutoff_len=256,
    )  # fmt: skip
    run_stage(build_config(keys))
    return out, data
