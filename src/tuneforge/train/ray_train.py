"""`USE_RAY=1 tuneforge train cfg.yaml`: the same training as a Ray Train job, so a cluster that already runs
Ray takes tuneforge runs. Ray Train's TorchTrainer starts `ray_num_workers` workers (each with
`resources_per_worker`, placed by `placement_strategy`) and their process group (gloo on CPU, NCCL on
CUDA); each worker runs the configured stage exactly as a torchrun process does (same rank-0 rules, same
atomic checkpoints in output_dir, so rerunning the command resumes). Ray Train's own record goes to
`ray_storage_path` under `ray_run_name`; `ray_init_kwargs` go to ray.init (e.g. the address of a running
cluster). The keys are LLaMA-Factory's (ray_num_workers, ray_init_kwargs; the others from its earlier
versions). Paths in the config are read on every node: on several nodes keep them on shared storage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.utils.env import env_flag
from tuneforge.utils.errors import UserError
from tuneforge.utils.paths import tuneforge_home

# what a worker needs of the launcher's environment (Ray workers on other nodes do not inherit it)
FORWARDED_PREFIXES = ("TUNEFORGE_", "HF_", "TRANSFORMERS_", "MODELSCOPE_", "TOKENIZERS_", "OMP_")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def ray_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether this `tuneforge train` runs as a Ray Train job (USE_RAY=1, as LLaMA-Factory reads it)."""
    return env_flag("USE_RAY", env) and (os.environ if env is None else env).get("LOCAL_RANK") is None


def _mapping(cfg: RunConfig, key: str) -> dict[str, Any]:
    value = cfg.llamafactory.get(key)
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise UserError(f"key '{key}': {value!r} is not a JSON object ({err})") from None
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise UserError(f"key '{key}': a mapping is expected (for example {{num_cpus: 2}}), not {value!r}")
    return dict(value)


def ray_settings(cfg: RunConfig, cuda: bool) -> dict[str, Any]:
    """The Ray Train settings of the run, every key checked (UserError naming the key)."""
    keys = cfg.llamafactory
    try:
        workers = int(keys.get("ray_num_workers", 1))
    except (TypeError, ValueError):
        workers = 0
    if workers < 1:
        raise UserError(
            f"key 'ray_num_workers': a whole number >= 1 is expected, not {keys['ray_num_workers']!r}"
        )
    placement = str(keys.get("placement_strategy") or "PACK").upper()
    if placement not in PLACEMENTS:
        raise UserError(f"key 'placement_strategy': {placement!r} is not one of {', '.join(PLACEMENTS)}")
    filesystem = keys.get("ray_storage_filesystem")
    if filesystem not in (None, "", "local"):
        raise UserError(
            f"key 'ray_storage_filesystem': {filesystem!r}: tuneforge keeps Ray Train's record on a local or "
            "shared path (ray_storage_path); checkpoints stay in output_dir"
        )
    storage = Path(keys.get("ray_storage_path") or tuneforge_home() / "ray_results").expanduser().resolve()
    return {
        "workers": workers,
        "resources": _mapping(cfg, "resources_per_worker") or ({"GPU": 1} if cuda else {"CPU": 1}),
        "placement": placement,
        "init": _mapping(cfg, "ray_init_kwargs"),
        "storage": str(storage),
        "name": str(keys.get("ray_run_name") or Path(cfg.training.output_dir).name or "tuneforge"),
    }


def _worker(job: dict[str, Any]) -> None:
    """One Ray worker: the launcher's folder and environment, torchrun's variables from Ray's context, then
    the stage (the config is read again here, as every torchrun process reads it)."""
    import ray.train

    from tuneforge.config import load_config
    from tuneforge.train.launch import TRACKED_ENV
    from tuneforge.train.stages import run_stage

    context = ray.train.get_context()
    os.environ.update(job["env"])
    os.environ.update(
        {
            TRACKED_ENV: "1",  # the launcher tracks the run
            "RANK": str(context.get_world_rank()),
            "WORLD_SIZE": str(context.get_world_size()),
            "LOCAL_RANK": str(context.get_local_rank()),
            "LOCAL_WORLD_SIZE": str(context.get_local_world_size()),
            "NODE_RANK": str(context.get_node_rank()),
        }
    )
    os.chdir(job["cwd"])
    run_stage(load_config(job["config"], job["overrides"]))


def run_on_ray(cfg: RunConfig, config: str | None, overrides: list[str]) -> None:
    """Train `cfg` as a Ray Train job; returns when every worker has finished (UserError if one failed)."""
    try:
        import ray
        from ray.train import RunConfig as RayRunConfig
        from ray.train import ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise UserError("USE_RAY=1 needs Ray Train: pip install 'ray[train]'") from None
    import torch

    from tuneforge.train.launch import DEFAULT_TIMEOUT_S

    cuda = torch.cuda.is_available()
    settings = ray_settings(cfg, cuda)
    if not ray.is_initialized():
        ray.init(**settings["init"])
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": config, "overrides": overrides, "cwd": os.getcwd(), "env": env},
        torch_config=TorchConfig(
            backend="nccl" if cuda else "gloo",
            timeout_s=int(cfg.llamafactory.get("ddp_timeout") or DEFAULT_TIMEOUT_S),
        ),
        scaling_config=ScalingConfig(
            num_workers=settings["workers"],
            use_gpu=cuda,
            resources_per_worker=settings["resources"],
            placement_strategy=settings["placement"],
        ),
        run_config=RayRunConfig(name=settings["name"], storage_path=settings["storage"]),
    )
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps a worker's failure; its message names the worker's error
        raise UserError(f"the Ray Train job failed: {str(err).strip().splitlines()[-1][:500]}") from None
