"""The single-process run the multi-process tests compare with: batch 4, 6 steps, checkpoints every 3."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def batch4_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.distributed.test_ddp import train

    out = tmp_path_factory.mktemp("batch4") / "run"
    done = train(
        tiny_model_dir, out, {"TUNEFORGE_HOME": str(out.parent / "home")}, per_device_train_batch_size=4
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out
