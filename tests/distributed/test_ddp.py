"""Several processes on CPU (torchrun, gloo), started by `tuneforge train` itself: 2 processes x batch 2 train
exactly as 1 process x batch 4 (same rows per step, the loss normalised over the global batch), and the
files a run writes once are written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_sft_stage import tiny_run_keys
from tuneforge.train.launch import torchrun_command

REPO = Path(__file__).resolve().parents[2]


def train(tiny_model_dir: Path, out: Path, env: dict[str, str], **keys) -> subprocess.CompletedProcess:
    """`tuneforge train` of the tiny LoRA run in a fresh process (6 steps, checkpoints every 3)."""
    flat = tiny_run_keys(
        tiny_model_dir,
        out,
        **{"gradient_accumulation_steps": 1, "max_steps": 6, "save_steps": 3, "seed": 1, **keys},
    )
    argv = [sys.executable, "-m", "tuneforge.cli.main", "train", *(f"{k}={v}" for k, v in flat.items())]
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}, timeout=900
    )


def losses(out: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows if "loss" in r]


# Across an epoch boundary too: both layouts draw from accelerate's SeedableRandomSampler (reseeded with seed +
# epoch on every process) and each process takes every other batch of it, so step k holds the same rows in
# either (plain identity rows: 24, 6 steps of 4 per epoch, 8 steps). Where an epoch does not fill its last
# global batch, one process trains the rows left while several fill their last batches with rows from the
# epoch's start (accelerate's even_batches, as in LLaMA-Factory): the identity data packs into 15 sequences,
# so packed runs are compared over the 3 whole steps of the first epoch.
# DPO's reference is the policy with its adapter off, in each process (here under DeepSpeed ZeRO-3)
@pytest.mark.parametrize(
    "extra",
    [
        # (plain rows: the SIGKILL test below compares a plain 2 x 2 run with the 1 x 4 one)
        # with packing, and under DeepSpeed ZeRO-2 with the optimizer states offloaded to CPU memory and gradient
        # checkpointing (keep_attention) in the two processes only
        {"max_steps": 8, "save_steps": 4},
        {
            "packing": "true",
            "max_steps": 3,
            "deepspeed": REPO / "examples/deepspeed/ds_z2_offload_config.json",
            "gradient_checkpointing": True,
        },
        # DPO under DeepSpeed ZeRO-3: the adapter-off reference is the same partitioned model
        {
            "stage": "dpo",
            "dataset": "identity_pref",
            "deepspeed": REPO / "examples/deepspeed/ds_z3_config.json",
        },
    ],
    ids=["two-epochs", "packing-zero2-offload", "dpo-zero3"],
)
def test_two_processes_of_batch_2_train_as_one_process_of_batch_4(extra, tiny_model_dir, tmp_path):
    if "deepspeed" in extra:
        pytest.importorskip("deepspeed")
    if "offload" in str(extra.get("deepspeed")):
        # the shipped config makes DeepSpeed build its C++ CPU Adam (2.5 minutes of g++ on a fresh machine);
        # the states stay offloaded, torch's AdamW updates them instead (zero_force_ds_cpu_optimizer: false)
        config = json.loads(Path(extra["deepspeed"]).read_text())
        extra = {**extra, "deepspeed": tmp_path / "ds_z2_offload_torch_adam.json"}
        extra["deepspeed"].write_text(json.dumps({**config, "zero_force_ds_cpu_optimizer": False}))
    home = {"TUNEFORGE_HOME": str(tmp_path / "home")}
    single = {k: v for k, v in extra.items() if k not in ("deepspeed", "gradient_checkpointing")}
    one = train(tiny_model_dir, tmp_path / "one", home, per_device_train_batch_size=4, **single)
    assert one.returncode == 0, one.stderr[-3000:]
    reference = tmp_path / "one"
    two = train(
        tiny_model_dir, tmp_path / "two", {**home, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"},
        per_device_train_batch_size=2, **extra,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    if extra.get("gradient_checkpointing"):
        assert "2 layers keep their attention outputs" in two.stderr
    a, b = losses(reference), losses(tmp_path / "two")
    steps = list(range(1, int(extra.get("max_steps", 6)) + 1))
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == steps  # one record per step, not per process
    for (_, loss_a, norm_a), (_, loss_b, norm_b) in zip(a, b, strict=True):
        assert loss_b == pytest.approx(loss_a, abs=1e-5) and norm_b == pytest.approx(norm_a, abs=1e-5)
    assert loss_a != a[0][1]  # it trained
    wa = load_file(str(reference / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    # Adam divides by sqrt(v): gradients equal to ~1e-7 (the all-reduce adds in another order) move weights by
    # up to ~1e-5 differently after 8 steps
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 3e-5
    every = int(extra.get("save_steps", 3))
    checkpoint = tmp_path / "two" / f"checkpoint-{steps[-1] // every * every}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}  # each process's
    assert not list((tmp_path / "two").glob(".partial-*"))


LAUNCHER = """
import sys
import tuneforge.train.launch as launch
from tuneforge.cli.main import main

def launched(command):
    heavy = sorted(m for m in ("transformers", "peft", "datasets", "deepspeed") if m in sys.modules)
    print("torch.distributed.run" in command, heavy)
    return 0

launch.run_launched = launched
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_the_launching_process_starts_torchrun_without_importing_the_training_stack(tiny_model_dir, tmp_path):
    """It checks the config (DeepSpeed's too) and waits: transformers, PEFT and DeepSpeed (seconds of imports)
    load in the training processes only."""
    flat = tiny_run_keys(
        tiny_model_dir, tmp_path / "out", deepspeed=REPO / "examples/deepspeed/ds_z2_config.json"
    )
    env = {**os.environ, "TUNEFORGE_HOME": str(tmp_path / "home"), "FORCE_TORCHRUN": "1"}
    argv = [sys.executable, "-c", LAUNCHER, *(f"{k}={v}" for k, v in flat.items())]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True []"


def test_the_launch_command_honours_llamafactorys_variables():
    argv = ["cfg.yaml", "lora_rank=8"]
    single = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "4", "NNODES": "2", "NODE_RANK": "1",
              "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29555"}  # fmt: skip
    command = torchrun_command(argv, single)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert {
        "--nproc-per-node=4",
        "--nnodes=2",
        "--node-rank=1",
        "--master-addr=10.0.0.1",
        "--master-port=29555",
    } <= set(command)
    assert command[-5:] == ["-m", "tuneforge.cli.main", "train", "cfg.yaml", "lora_rank=8"]
    elastic = torchrun_command(
        argv,
        {"FORCE_TORCHRUN": "1", "MIN_NNODES": "1", "MAX_NNODES": "3", "RDZV_ID": "job7", "MASTER_ADDR": "h"},
    )
    assert {
        "--nnodes=1:3",
        "--max-restarts=3",
        "--rdzv-id=job7",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=h:29500",
    } <= set(elastic)
    assert torchrun_command(argv, {"FORCE_TORCHRUN": "1", "LOCAL_RANK": "0"}) is None  # already launched
    if not torch.cuda.is_available():
        assert torchrun_command(argv, {}) is None  # one device: train in this process
    from tuneforge.utils.errors import UserError

    with pytest.raises(UserError, match="NPROC_PER_NODE='two'"):
        torchrun_command(argv, {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "two"})


def test_a_rank_killed_mid_run_then_the_same_command_continues_to_the_same_losses(
    tiny_model_dir, tmp_path, batch4_run
):
    """SIGKILL of rank 1 after a checkpoint: torchrun stops the other process and the run fails; running the
    same command again resumes from the newest complete checkpoint and ends as an uninterrupted run."""
    import time

    import psutil

    home = {"TUNEFORGE_HOME": str(tmp_path / "home")}
    keys = {"save_steps": 2, "per_device_train_batch_size": 2}
    out = tmp_path / "killed"
    env = {**os.environ, **home, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}
    flat = tiny_run_keys(
        tiny_model_dir, out, **{"gradient_accumulation_steps": 1, "max_steps": 6, "seed": 1, **keys}
    )
    argv = [sys.executable, "-m", "tuneforge.cli.main", "train", *(f"{k}={v}" for k, v in flat.items())]
    launcher = psutil.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    deadline = time.monotonic() + 600
    while launcher.poll() is None and time.monotonic() < deadline:
        if (out / "checkpoint-2").is_dir():
            for child in launcher.children(recursive=True):
                try:
                    if child.environ().get("LOCAL_RANK") == "1":
                        child.kill()
                        killed = True
                except psutil.Error:
                    continue
            if killed:
                break
        time.sleep(0.005)
    assert killed, "the run ended before a rank could be killed"
    assert launcher.wait(timeout=300) != 0  # the launcher reports the failed run
    assert not (out / "tuneforge_finished.json").exists()
    again = train(tiny_model_dir, out, {**home, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}, **keys)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    a, b = losses(batch4_run), losses(out)
    assert [s for s, _, _ in b] == list(range(1, 7))  # one record per step, not per process
    for (_, loss_a, norm_a), (_, loss_b, norm_b) in zip(a, b, strict=True):
        assert loss_b == pytest.approx(loss_a, abs=1e-5) and norm_b == pytest.approx(norm_a, abs=1e-5)
    wa = load_file(str(batch4_run / "adapter_model.safetensors"))
    wb = load_file(str(out / "adapter_model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in (out / "checkpoint-6").iterdir()}
    assert not list(out.glob(".partial-*"))


@pytest.mark.slow  # SmolLM2 weights, three processes
def test_smollm2_two_processes_of_batch_2_train_as_one_of_batch_4(smollm2_dir, tmp_path):
    """The same equality on a real model (30 layers, tied embeddings, 49k vocabulary): 3 LoRA steps."""
    home = {"TUNEFORGE_HOME": str(tmp_path / "home")}
    keys = {"max_steps": 3, "cutoff_len": 64, "learning_rate": 1e-3, "save_steps": 1000}
    one = train(smollm2_dir, tmp_path / "one", home, per_device_train_batch_size=4, **keys)
    assert one.returncode == 0, one.stderr[-3000:]
    two_env = {**home, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}
    two = train(smollm2_dir, tmp_path / "two", two_env, per_device_train_batch_size=2, **keys)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == [1, 2, 3]
    for (_, loss_a, norm_a), (_, loss_b, norm_b) in zip(a, b, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5) and norm_b == pytest.approx(norm_a, rel=1e-4)
    assert a[-1][1] < a[0][1]  # it trained
    wa = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    # Adam divides by sqrt(v): where a gradient is near zero, a difference in its 7th digit (the all-reduce adds
    # in another order; the CPU's vector width changes the rounding too) can move that one weight by up to the
    # learning rate. So the adapters are compared as wholes: LoRA B, which moved from zero in these 3 steps,
    # differs by under 5% of how far it moved.
    lora_b = [k for k in wa if "lora_B" in k]
    moved = sum(float(wa[k].pow(2).sum()) for k in lora_b) ** 0.5
    apart = sum(float((wa[k] - wb[k]).pow(2).sum()) for k in lora_b) ** 0.5
    assert apart < 0.05 * moved, (apart, moved)
