"""Several processes for one training run: `tuneforge train` starts itself under torchrun when more than one
accelerator is visible, `FORCE_TORCHRUN=1`, or the config names a DeepSpeed config (DeepSpeed's processes, even
one, run under a launcher), with LLaMA-Factory's variables:

- `NPROC_PER_NODE` (default: the visible accelerators), `NNODES` (1), `NODE_RANK` (0), `MASTER_ADDR`
  (127.0.0.1), `MASTER_PORT` (a free port on a single node);
- elastic: `MIN_NNODES` and `MAX_NNODES` (with `MAX_RESTARTS`, 3, and `RDZV_ID`, "tuneforge") use the c10d
  rendezvous at MASTER_ADDR:MASTER_PORT.

The command is an argument list (never a shell string). Under torchrun (LOCAL_RANK set) nothing is
relaunched; `torchrun -m tuneforge.cli.main train ...` and `accelerate launch` work the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from tuneforge.utils.env import env_flag
from tuneforge.utils.errors import UserError

TRACKED_ENV = "TUNEFORGE_LAUNCHED"  # set for the processes of a launch: the launcher tracks the run


def accelerators() -> int:
    """CUDA (or XPU/NPU through torch) devices this process sees."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    xpu = getattr(torch, "xpu", None)
    return xpu.device_count() if xpu is not None and xpu.is_available() else 0


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes what a run writes once (metrics, registry, run.yaml, plots)."""
    return rank() == 0


# LLaMA-Factory's examples set ddp_timeout: 180000000; a shorter default would kill the processes waiting
# while rank 0 tokenizes a large dataset
DEFAULT_TIMEOUT_S = 180_000_000


@contextmanager
def main_process_first(timeout_s: int | None = None) -> Iterator[None]:
    """With several processes, rank 0 runs the block first (tokenizing into the cache) and the others then
    run it (reading the cache); alone, just the block. Starts the process group (gloo on CPU) with
    `timeout_s` (ddp_timeout) if nothing has yet."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    import datetime

    import torch
    from accelerate import PartialState

    state = PartialState(
        cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S)
    )
    with state.main_process_first():
        yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _number(env: Mapping[str, str], key: str, default: str) -> str:
    value = env.get(key) or default
    if not value.isdigit():
        raise UserError(f"environment variable {key}={value!r}: a whole number is expected")
    return value


def torchrun_command(
    argv: list[str], env: Mapping[str, str] | None = None, always: bool = False
) -> list[str] | None:
    """The torchrun command that runs `tuneforge train ARGV` as several processes, or None to train here.
    `always`: launch even for one device (DeepSpeed runs its processes, even one, under a launcher)."""
    env = os.environ if env is None else env
    if env.get("LOCAL_RANK") is not None:
        return None  # already one of the processes
    devices = accelerators()
    if not (always or env_flag("FORCE_TORCHRUN", env)) and devices <= 1:
        return None
    nproc = _number(env, "NPROC_PER_NODE", str(max(devices, 1)))
    addr = env.get("MASTER_ADDR") or "127.0.0.1"
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if env.get("MIN_NNODES") or env.get("MAX_NNODES"):
        low = _number(env, "MIN_NNODES", env.get("MAX_NNODES", "1"))
        high = _number(env, "MAX_NNODES", low)
        port = _number(env, "MASTER_PORT", "29500")
        command += [
            f"--nnodes={low}:{high}",
            f"--max-restarts={_number(env, 'MAX_RESTARTS', '3')}",
            f"--rdzv-id={env.get('RDZV_ID') or 'tuneforge'}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={addr}:{port}",
        ]
    else:
        nnodes = _number(env, "NNODES", "1")
        port = _number(env, "MASTER_PORT", "29500" if nnodes != "1" else str(_free_port()))
        command += [
            f"--nnodes={nnodes}",
            f"--node-rank={_number(env, 'NODE_RANK', '0')}",
            f"--master-addr={addr}",
            f"--master-port={port}",
        ]
    return [*command, "-m", "tuneforge.cli.main", "train", *argv]


def run_launched(command: list[str]) -> int:
    """Run the torchrun command, passing SIGINT/SIGTERM on to it (torchrun stops its workers); its exit code."""
    child = subprocess.Popen(command, env={**os.environ, TRACKED_ENV: "1"})  # an argument list: no shell
    previous = {}

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, forward)
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
