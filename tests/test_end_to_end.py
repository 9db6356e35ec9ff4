"""The real thing on the embedded SmolLM2: `tuneforge train` then `tuneforge chat --prompt` answers differently."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tuneforge(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=900, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_trained_adapter_changes_what_chat_answers(smollm2_dir, tmp_path):
    out = tmp_path / "identity"
    tuneforge("train", "examples/quickstart.yaml", f"output_dir={out}", "plot_loss=false")
    question = ["--prompt", "Who are you?", "--do_sample", "false", "--max_new_tokens", "24"]
    before = tuneforge("chat", *question).stdout.strip()
    after = tuneforge("chat", *question, "--adapter_name_or_path", str(out)).stdout.strip()
    assert before != after
    assert "Forge" in after and "Forge" not in before
