"""Rendered tokens equal LLaMA-Factory's for every template name. LLaMA-Factory's side is recorded by
`bench/template_parity.py --record` from LLaMA-Factory's own template code in its own venv
(tests/fixtures/llamafactory/template_ids.json), so the comparison needs no LLaMA-Factory install; the
recording itself is checked against the live LLaMA-Factory where .bench/lf-venv exists (make bench)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import template_parity  # noqa: E402

REPORT = Path(__file__).resolve().parents[2] / "docs" / "template-parity.md"
# LLaMA-Factory writes some of their tokens by id, which SmolLM2 lacks (docs/template-parity.md says why)
KNOWN_DIFFERING = {"chatglm3", "yuan"}


@pytest.mark.slow
def test_every_template_matches_the_recorded_llamafactory_ids():
    verdicts = template_parity.parity(theirs=template_parity.recorded())
    wrong = {n: v for n, v in verdicts.items() if v[0] == "differing" and n not in KNOWN_DIFFERING}
    assert not wrong, wrong
    assert not [n for n, v in verdicts.items() if v[0] == "missing-in-tuneforge"]
    # these use only tokens SmolLM2 has, so they must be identical id for id
    for name in ("qwen", "qwen3", "qwen3_nothink", "chatml", "alpaca", "default", "vicuna", "empty"):
        assert verdicts[name][0] == "identical", (name, verdicts[name])
    assert REPORT.read_text(encoding="utf-8") == template_parity.render_report(verdicts), (
        "docs/template-parity.md is out of date: .venv/bin/python bench/template_parity.py --write docs/template-parity.md"
    )


def test_the_recording_is_refused_when_the_conversations_change(tmp_path, monkeypatch):
    path = tmp_path / "ids.json"
    template_parity.record({"chatml": {"plain": "error: x"}}, path)
    assert template_parity.recorded(path) == {"chatml": {"plain": "error: x"}}
    monkeypatch.setitem(template_parity.CASES, "extra", {"messages": [["user", "Hi"], ["assistant", "Yo"]]})
    with pytest.raises(ValueError, match="--record"):
        template_parity.recorded(path)


@pytest.mark.slow
@pytest.mark.skipif(
    not (template_parity.LF_VENV / "bin" / "llamafactory-cli").exists(),
    reason="LLaMA-Factory's venv (.bench/lf-venv) is not installed; make bench installs it",
)
def test_the_recording_is_what_llamafactory_renders_now():
    assert template_parity.llamafactory_side() == template_parity.recorded()
