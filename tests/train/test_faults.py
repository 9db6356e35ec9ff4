"""Faults a long run meets: SIGKILL at any moment (also mid-checkpoint), SIGTERM, NaN losses.

Killed runs are real `tuneforge train` processes, forked by `fork_server` from a process that has
imported everything once (eleven interpreter starts with torch took most of a minute)."""

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_sft_stage import config
from tuneforge.config import dump_config
from tuneforge.train import checkpoint
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage

REPO = Path(__file__).resolve().parents[2]
FAULT_KEYS = {"max_steps": 9, "save_steps": 1, "save_total_limit": 2, "lora_dropout": 0.1}


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl")]


class ForkedRun:
    """One `tuneforge train` forked by the fork server, with the part of Popen's interface tests use."""

    def __init__(self, server: "ForkServer", pid: int, stderr: Path):
        self.server, self.pid, self.stderr, self.returncode = server, pid, stderr, None

    def poll(self) -> int | None:
        self.returncode = self.server.exits.get(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 120) -> int:
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"train pid {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def communicate(self, timeout: float = 120) -> tuple[None, str]:
        self.wait(timeout)
        return None, self.stderr.read_text(encoding="utf-8", errors="replace")


class ForkServer:
    """`tests/train/fork_server.py`: imports once, forks a run per `start` (seconds saved per run)."""

    def __init__(self, folder: Path):
        self.folder, self.count, self.exits, self.started = folder, 0, {}, []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.train.fork_server"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pids: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, *values = line.split()
            if kind == "pid":
                self.pids.put(int(values[0]))
            elif kind == "exit":
                self.exits[int(values[0])] = int(values[1])

    def start(self, config_path: Path, **delays: float) -> ForkedRun:
        self.count += 1
        stderr = self.folder / f"run-{self.count}.stderr"
        self.proc.stdin.write(
            json.dumps({"config": str(config_path), "stderr": str(stderr), **delays}) + "\n"
        )
        self.proc.stdin.flush()
        self.started.append(self.pids.get(timeout=120))
        return ForkedRun(self, self.started[-1], stderr)

    def close(self) -> None:
        for pid in set(self.started) - set(self.exits):  # a failed test leaves no run behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture
def runs(tmp_path):
    server = ForkServer(tmp_path)
    yield server
    server.close()


def wait_for(proc: ForkedRun, condition, timeout: float = 60) -> bool:
    """Poll until `condition()` holds (True) or the process ends (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.005)
    raise TimeoutError("the training process made no progress")


def test_sigkill_at_random_moments_then_rerun_resumes_to_the_same_losses(tiny_model_dir, tmp_path, runs):
    reference = tmp_path / "reference"
    run_stage(config(tiny_model_dir, reference, **FAULT_KEYS))

    out = tmp_path / "killed"
    config_path = tmp_path / "run.yaml"
    dump_config(config(tiny_model_dir, out, **FAULT_KEYS), config_path)
    rng = random.Random(1234)
    kills = mid_write = 0
    while True:
        proc = runs.start(config_path, file=0.02)
        if kills < 10:
            done_before = len(losses(out))
            if kills % 2 == 0:  # during a checkpoint write: a staging folder exists
                hit = wait_for(proc, lambda: any(out.glob(".partial-checkpoint-*")))
            else:  # anywhere in a step, once this attempt has made progress
                hit = wait_for(proc, lambda n=done_before: len(losses(out)) > n)
            if hit:
                time.sleep(rng.uniform(0, 0.1))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                mid_write += any(out.glob(".partial-checkpoint-*"))
                continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        break
    assert kills == 10 and mid_write >= 3
    assert losses(out) == losses(reference)
    final, expected = (
        load_file(out / "adapter_model.safetensors"),
        load_file(reference / "adapter_model.safetensors"),
    )
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    left = checkpoint.list_checkpoints(out)
    assert [c.step for c in left] == [8, 9] and all(checkpoint.verify(c.path) is None for c in left)
    assert not list(out.glob(".partial-*"))


def test_sigterm_writes_a_checkpoint_and_exits_then_resumes(tiny_model_dir, tmp_path, runs):
    out = tmp_path / "run"
    config_path = tmp_path / "run.yaml"
    keys = {"max_steps": 6, "save_steps": 100}  # no checkpoint but the one the signal asks for
    dump_config(config(tiny_model_dir, out, **keys), config_path)
    proc = runs.start(config_path, step=0.3)
    assert wait_for(proc, lambda: len(losses(out)) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "received SIGTERM" in err and "Run the same command again to resume" in err
    saved = checkpoint.list_checkpoints(out)
    assert len(saved) == 1 and checkpoint.verify(saved[0].path) is None and saved[0].step < 6
    assert not (out / "adapter_model.safetensors").exists()  # not mistaken for a finished run
    run_stage(config(tiny_model_dir, out, **keys))
    assert [s for s, _ in losses(out)] == list(range(1, 7))


def nan_in_steps(monkeypatch, steps: set[int], accumulation: int) -> None:
    from tuneforge.train import trainer as trainer_module

    real, calls = trainer_module.answer_only_loss, []

    def poisoned(model, inputs, num_items, *rest):
        loss = real(model, inputs, num_items, *rest)
        if model.training:
            calls.append(1)
            if (len(calls) - 1) // accumulation + 1 in steps:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(trainer_module, "answer_only_loss", poisoned)


def test_a_nan_step_is_skipped_and_counted(tiny_model_dir, tmp_path, monkeypatch):
    nan_in_steps(monkeypatch, {3}, accumulation=2)
    out = tmp_path / "run"
    # merge_micro_batches off: the NaN is placed by counting forward passes, one per micro-batch
    run_stage(config(tiny_model_dir, out, max_steps=6, save_steps=6, merge_micro_batches=False))
    skipped = read_metrics(out / "metrics.jsonl", skipped=True)
    assert len(skipped) == 1
    assert (
        skipped[0]["step"] == 3
        and skipped[0]["reason"] == "loss is nan"
        and skipped[0]["nonfinite_steps"] == 1
    )
    assert len(skipped[0]["sample_ids"]) == 8 and set(skipped[0]["sample_ids"]) <= set(range(24))
    logged = {r["step"]: r for r in read_metrics(out / "metrics.jsonl")}
    assert logged[4]["learning_rate"] == logged[3]["learning_rate"]  # the scheduler did not move at step 3
    state = torch.load(out / "checkpoint-6" / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in state.values()} == {5}  # 6 steps, one skipped
    assert all(torch.isfinite(t).all() for t in load_file(out / "adapter_model.safetensors").values())


def test_repeated_nans_stop_the_run_with_exit_1_and_keep_the_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    from tuneforge.cli.main import main

    nan_in_steps(monkeypatch, {3, 4, 5, 6}, accumulation=2)
    out = tmp_path / "run"
    config_path = tmp_path / "run.yaml"
    keys = dict(max_steps=8, save_steps=2, max_nonfinite_steps=3, merge_micro_batches=False)
    dump_config(config(tiny_model_dir, out, **keys), config_path)
    assert main(["train", str(config_path)]) == 1
    err = capsys.readouterr().err
    assert "training stopped at step 5: 3 steps in a row had a non-finite loss" in err
    assert "checkpoint-4" in err and "Traceback" not in err
    assert [c.step for c in checkpoint.list_checkpoints(out)] == [2, 4]
    assert checkpoint.verify(out / "checkpoint-4") is None
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl", skipped=True)] == [3, 4, 5]
    assert not (out / "adapter_model.safetensors").exists()
