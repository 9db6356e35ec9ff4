"""USE_RAY=1: the same training as a Ray Train job on a local Ray instance (2 CPU workers, gloo): the losses of
two workers of batch 2 equal one process of batch 4, checkpoints are tuneforge's, the run is written once."""

from __future__ import annotations

import json

import pytest

from tests.distributed.test_ddp import losses, train
from tests.train.test_sft_stage import tiny_run_keys
from tuneforge.config import load_config
from tuneforge.train.ray_train import ray_settings
from tuneforge.utils.errors import UserError


def test_two_ray_workers_train_as_one_process_of_the_doubled_batch(tiny_model_dir, tmp_path, batch4_run):
    pytest.importorskip("ray.train")
    home = {"TUNEFORGE_HOME": str(tmp_path / "home")}
    ray_keys = {
        "ray_num_workers": 2,
        "ray_init_kwargs": json.dumps({"num_cpus": 2, "include_dashboard": False}),
        "ray_storage_path": tmp_path / "ray_results",
        "ray_run_name": "tiny",
    }
    out = tmp_path / "ray"
    job = train(tiny_model_dir, out, {**home, "USE_RAY": "1"}, per_device_train_batch_size=2, **ray_keys)
    assert job.returncode == 0, job.stderr[-5000:]
    a, b = losses(batch4_run), losses(out)
    assert [s for s, _, _ in b] == [1, 2, 3, 4, 5, 6]  # one record per step, not per worker
    assert [loss for _, loss, _ in b] == pytest.approx([loss for _, loss, _ in a], abs=1e-5)
    assert {"rng_state_0.pth", "rng_state_1.pth", "manifest.json"} <= {
        p.name for p in (out / "checkpoint-6").iterdir()
    }
    assert (out / "tuneforge_finished.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (tmp_path / "ray_results" / "tiny").is_dir()  # Ray Train's own record


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({"ray_num_workers": 0}, "ray_num_workers"),
        ({"placement_strategy": "EVERYWHERE"}, "placement_strategy"),
        ({"ray_storage_filesystem": "s3"}, "ray_storage_filesystem"),
        ({"resources_per_worker": "[1]"}, "resources_per_worker"),
    ],
)
def test_ray_keys_are_checked_naming_the_key(keys, expected, tiny_model_dir, tmp_path):
    flat = tiny_run_keys(tiny_model_dir, tmp_path / "out", **keys)
    cfg = load_config(None, [f"{k}={v}" for k, v in flat.items()])
    with pytest.raises(UserError, match=expected):
        ray_settings(cfg, cuda=False)


def test_ray_defaults_are_one_cpu_per_worker_and_the_run_name(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    flat = tiny_run_keys(
        tiny_model_dir, tmp_path / "out", ray_num_workers=4, resources_per_worker='{"CPU": 2}'
    )
    settings = ray_settings(load_config(None, [f"{k}={v}" for k, v in flat.items()]), cuda=False)
    assert settings["workers"] == 4 and settings["resources"] == {"CPU": 2} and settings["name"] == "out"
    assert settings["placement"] == "PACK"
    assert settings["storage"] == str((tmp_path / "home" / "ray_results").resolve())  # under TUNEFORGE_HOME
