"""`allocator`: `tuneforge train` re-executes itself with jemalloc preloaded where the system has it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.train.test_sft_stage import tiny_run_keys
from tuneforge.utils import allocator
from tuneforge.utils.errors import UserError


def test_auto_preloads_jemalloc_where_found_and_keeps_the_users_settings(monkeypatch):
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: "libjemalloc.so.2")
    env = allocator.reexec_environment("auto", {"PATH": "/bin"})
    assert env["LD_PRELOAD"] == "libjemalloc.so.2" and env["MALLOC_CONF"] == allocator.JEMALLOC_CONF
    assert env[allocator.CHOSEN_ENV] == "jemalloc" and env["PATH"] == "/bin"
    mine = allocator.reexec_environment("jemalloc", {"LD_PRELOAD": "libmine.so", "MALLOC_CONF": "narenas:2"})
    assert mine["LD_PRELOAD"] == "libjemalloc.so.2 libmine.so" and mine["MALLOC_CONF"] == "narenas:2"
    # nothing to do: asked for the system's malloc, already re-executed, or jemalloc preloaded by the user
    assert allocator.reexec_environment("system", {}) is None
    assert allocator.reexec_environment("auto", {allocator.CHOSEN_ENV: "jemalloc"}) is None
    assert allocator.reexec_environment("auto", {"LD_PRELOAD": "/opt/libjemalloc.so.2"}) is None


def test_without_jemalloc_auto_keeps_malloc_and_jemalloc_is_refused(monkeypatch):
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)
    assert allocator.reexec_environment("auto", {}) is None
    with pytest.raises(UserError, match="apt install libjemalloc2"):
        allocator.reexec_environment("jemalloc", {})


@pytest.mark.parametrize("choice", ["auto", "system"])
def test_the_train_command_runs_with_the_allocator_it_was_given(choice, tiny_model_dir, tmp_path):
    """The training process itself says which allocator is mapped into it (from /proc/self/maps)."""
    if choice == "auto" and allocator.find_jemalloc() is None:
        pytest.skip("this machine has no jemalloc library (apt install libjemalloc2)")
    path = tmp_path / "run.yaml"
    keys = tiny_run_keys(tiny_model_dir, tmp_path / "out", max_steps=1, allocator=choice)
    path.write_text(yaml.safe_dump(keys))
    env = {
        k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.CHOSEN_ENV, "MALLOC_CONF")
    }
    done = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = "jemalloc" if choice == "auto" else "system"
    assert f"memory allocator: {expected}, attention: sdpa_packed" in done.stderr
