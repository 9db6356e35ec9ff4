"""Hub ids: downloads through the real huggingface_hub client from a local server that speaks the Hub's
protocol (interrupted and resumed), then the same id offline from the cache, and errors as sentences."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model.hub_server import serve

REPO = Path(__file__).resolve().parents[2]
RESOLVE = "from tuneforge.model.sources import resolve_model_path as r; import sys; print(r(sys.argv[1]))"


def run(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
    )


@pytest.fixture
def tiny_repo(tmp_path, tiny_model_dir) -> Path:
    """The tiny model's folder plus a pickled copy that must never be downloaded (safetensors exist)."""
    folder = tmp_path / "repo"
    folder.mkdir()
    for item in tiny_model_dir.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"not to be fetched")
    (folder / "model.onnx").write_bytes(b"not to be fetched")
    return folder


def test_download_resumes_after_a_cut_then_resolves_offline_from_the_cache(tiny_repo, tmp_path):
    weights = (tiny_repo / "model.safetensors").stat().st_size
    chunk = 10 * 1024 * 1024  # huggingface_hub keeps what it received in chunks of this size
    assert weights > chunk + 200_000
    server, repo, url = serve(tiny_repo, "acme/tiny", cut_after=chunk + 100_000)
    home = tmp_path / "hf-home"
    try:
        online = {"HF_HOME": str(home), "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
        first = run(RESOLVE, "acme/tiny", env=online)
        if first.returncode != 0:  # the client gave up after the cut: running again resumes
            assert "run the same command again" in first.stderr, first.stderr
            first = run(RESOLVE, "acme/tiny", env=online)
        assert first.returncode == 0, first.stderr
    finally:
        server.shutdown()
    snapshot = Path(first.stdout.strip().splitlines()[-1])
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_repo / "model.safetensors").read_bytes()
    assert not (snapshot / "pytorch_model.bin").exists() and not (snapshot / "model.onnx").exists()
    resumed = [
        line
        for line in repo.log
        if line.startswith("GET model.safetensors from ") and not line.endswith(" 0")
    ]
    assert resumed, repo.log  # the second read asked for the rest only
    # the server is gone: offline, the same id resolves from the cache without any network call
    offline = run(RESOLVE, "acme/tiny", env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout.strip().splitlines()[-1] == str(snapshot), (
        offline.stderr
    )


def test_train_and_chat_by_repo_id_from_a_laid_out_cache(tiny_model_dir, tmp_path):
    """A real HF cache layout (models--org--name/snapshots/<sha>, refs/main) made by the test."""
    home = tmp_path / "hf-home"
    snapshot = home / "hub" / "models--acme--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for item in tiny_model_dir.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (home / "hub" / "models--acme--tiny" / "refs").mkdir()
    (home / "hub" / "models--acme--tiny" / "refs" / "main").write_text("a" * 40)
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", "model_name_or_path=acme/tiny", "dataset=identity",
         f"dataset_dir={REPO / 'data'}", f"output_dir={out}", "max_steps=1", "cutoff_len=64",
         "per_device_train_batch_size=2", "lora_rank=2", "template=chatml"],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    assert (out / "adapter_model.safetensors").is_file()
    chat = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", "--model_name_or_path", "acme/tiny", "--adapter_name_or_path",
         str(out), "--template", "chatml", "--prompt", "Hi", "--do_sample", "false", "--max_new_tokens", "4"],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr[-2000:]
    models = subprocess.run(
        [sys.executable, "-m", "tuneforge", "models"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert models.returncode == 0 and "acme/tiny" in models.stdout


@pytest.mark.parametrize(
    ("name", "env", "words"),
    [
        ("acme/not-cached", {"HF_HUB_OFFLINE": "1"}, "hf download acme/not-cached"),
        ("acme/missing", {"HF_HUB_OFFLINE": "0"}, "no model repository 'acme/missing'"),
    ],
)
def test_unknown_ids_exit_2_with_a_sentence(name, env, words, tmp_path, tiny_repo):
    """Before the inference engine's imports (transformers' modeling code, seconds): the model is looked up
    first."""
    server, _, url = serve(tiny_repo, "acme/tiny")
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHAT_THEN_MODULES, "chat", "--model_name_or_path", name, "--prompt", "Hi"],
            capture_output=True, text=True, cwd=REPO,
            env={**os.environ, "HF_HOME": str(tmp_path / "h"), "HF_ENDPOINT": url, **env},
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


CHAT_THEN_MODULES = """
import sys
from tuneforge.cli.main import main
code = main(sys.argv[1:])
print(code, "transformers.modeling_utils" in sys.modules)
"""


def test_gguf_file_picks_a_gguf_in_a_hub_repo(tmp_path):
    """A GGUF (a tiny LLaMA with a small vocabulary, written by tuneforge's exporter; the embedded SmolLM2
    GGUF's conversion is tests/model/test_zoo.py's) served as one file of a repository, fetched by name and
    converted."""
    from tests.export.test_export import export
    from tests.helpers import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    base = tmp_path / "base"
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    (gguf,) = export(tmp_path, base, [], export_format="gguf", export_gguf_type="f32").glob("*.gguf")
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("a GGUF repository")
    (folder / gguf.name).symlink_to(gguf)
    server, repo, url = serve(folder, "acme/smol-gguf")
    code = (
        "import sys; from tuneforge.model.sources import resolve_model_path as r; "
        "print(r(sys.argv[1], gguf_file=sys.argv[2], cache_dir=sys.argv[3]))"
    )
    env = {"HF_HOME": str(tmp_path / "h"), "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0"}
    try:
        result = run(code, "acme/smol-gguf", gguf.name, str(tmp_path / "converted"), env=env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-2000:]
    converted = Path(result.stdout.strip().splitlines()[-1])
    assert (converted / "config.json").is_file() and any(converted.glob("*.safetensors"))
    assert [line for line in repo.log if line.startswith("GET ")] == [f"GET {gguf.name} from 0"]
