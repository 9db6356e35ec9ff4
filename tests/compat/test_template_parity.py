"""Rendered tokens equal LLaMA-Factory's for the most used template names, checked against LLaMA-Factory's
own template code in its own venv (bench/template_parity.py; the full report is docs/template-parity.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

NAMES = ["qwen", "qwen3", "qwen3_nothink", "llama3", "llama2", "mistral", "chatml", "alpaca", "default",
         "glm4", "gemma", "deepseek3", "phi4", "vicuna", "empty"]  # fmt: skip


@pytest.mark.slow
def test_common_templates_match_llamafactory_token_for_token():
    import template_parity

    try:
        template_parity.ensure_llamafactory()
    except subprocess.CalledProcessError as err:  # PyPI out of reach: nothing to compare with
        pytest.skip(f"could not install llamafactory into .bench/lf-venv: {err}")
    verdicts = template_parity.parity(NAMES)
    wrong = {n: v for n, v in verdicts.items() if v[0] not in ("identical", "same-text")}
    assert not wrong, wrong
    # these use only tokens SmolLM2 has, so they must be identical id for id
    for name in ("qwen", "qwen3", "qwen3_nothink", "chatml", "alpaca", "default", "vicuna", "empty"):
        assert verdicts[name][0] == "identical", (name, verdicts[name])
