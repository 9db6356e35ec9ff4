"""`tuneforge estimate` against measured peaks: short SmolLM2 runs on this CPU, each in its own process, peak RSS
measured by the kernel (ru_maxrss), printed beside the estimate: LoRA, freeze and full at two batch x cutoff
sizes (the six runs the constants were fitted to) and runs held out of the fit: two SFT runs and DPO with LoRA
(chosen and rejected rows) and with full tuning (a frozen reference copy).
Run: python bench/estimate_memory.py [--held-out]  (about 9 minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the six runs the constants were fitted to, then two held out of the fit (`--held-out` runs only those)
FITTED = [
    ("sft", method, batch, cutoff)
    for method in ("lora", "freeze", "full")
    for batch, cutoff in ((1, 256), (4, 512))
]
HELD_OUT = [
    ("sft", "lora", 2, 1024),
    ("sft", "full", 8, 128),
    ("dpo", "lora", 2, 512),
    ("dpo", "full", 1, 256),
]
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def long_rows(folder: Path) -> Path:
    """A dataset whose packed sequences fill cutoff_len: every token of a step is a trained answer token."""
    import random

    rng = random.Random(0)
    words = [
        "model",
        "data",
        "token",
        "train",
        "adapter",
        "memory",
        "layer",
        "weight",
        "answer",
        "question",
        "batch",
        "step",
        "loss",
    ]

    def note() -> str:
        return " ".join(rng.choice(words) for _ in range(600))

    rows = [{"instruction": f"Write note {i}.", "output": note()} for i in range(64)]
    pairs = [{"instruction": f"Write note {i}.", "chosen": note(), "rejected": note()} for i in range(16)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "long.json").write_text(json.dumps(rows))
    (folder / "long_pref.json").write_text(json.dumps(pairs))
    info = {
        "long": {"file_name": "long.json"},
        "long_pref": {"file_name": "long_pref.json", "ranking": True, "columns": {
            "prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
    }  # fmt: skip
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def keys(stage: str, method: str, batch: int, cutoff: int, out: Path) -> list[str]:
    flat = {
        "stage": stage,
        "finetuning_type": method,
        "dataset": "long" if stage == "sft" else "long_pref",
        "dataset_dir": str(out.parent / "data"),
        "template": "chatml",
        "cutoff_len": cutoff,
        "per_device_train_batch_size": batch,
        "max_steps": 3,
        "save_steps": 1000,
        "output_dir": str(out),
        "packing": "true" if stage == "sft" else "false",
        "overwrite_output_dir": "true",
    }
    return [f"{k}={v}" for k, v in flat.items()]


def main() -> None:
    from tuneforge.config import load_config
    from tuneforge.train.estimate import GiB, estimate

    print(
        f"{'stage':6s}{'method':8s}{'batch':>6s}{'cutoff':>8s}{'estimate GiB':>14s}{'measured GiB':>14s}{'error':>8s}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        long_rows(Path(tmp) / "data")
        for stage, method, batch, cutoff in HELD_OUT if "--held-out" in sys.argv else FITTED + HELD_OUT:
            argv = keys(stage, method, batch, cutoff, Path(tmp) / f"{stage}-{method}")
            cfg = load_config(overrides=argv)
            guess = estimate(cfg).total
            cmd = [sys.executable, "-m", "tuneforge.cli.main", "train", *argv]
            code, peak = subprocess.run(
                [sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, cwd=REPO, check=True
            ).stdout.split()
            if code != "0":
                raise SystemExit(f"{stage} {method} run failed: {' '.join(cmd)}")
            error = (guess - int(peak)) / int(peak)
            rows.append(
                {
                    "stage": stage,
                    "method": method,
                    "batch": batch,
                    "cutoff": cutoff,
                    "estimate": guess,
                    "measured": int(peak),
                }
            )
            print(
                f"{stage:6s}{method:8s}{batch:6d}{cutoff:8d}{guess / GiB:14.2f}{int(peak) / GiB:14.2f}{100 * error:+7.1f}%"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
