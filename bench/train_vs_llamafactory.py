"""LoRA SFT of SmolLM2-135M in tuneforge and in LLaMA-Factory: same rows, same config, same machine.

Prints non-padding tokens/s of the training loop and peak RSS of the whole process for each tool,
twice: with each tool's own defaults for what the YAML leaves out (LLaMA-Factory turns gradient
checkpointing on), and with the same computation (checkpointing off in both).

Scenarios: `short` (default): alpaca-style rows, cutoff 1024, batch 1 x 8, LoRA r8 on q/v; `long`: answers of
1,000-2,000 tokens in English and Chinese (scripts/make_long_rows.py), cutoff 2048, batch 2, LoRA r16 on
all linear layers, where the logits of long answers decide the memory.

Run as: python bench/train_vs_llamafactory.py [--scenario short|long] [--rows N] [--modes defaults,same]
LLaMA-Factory is installed from PyPI into .bench/lf-venv on first use (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
LF_VENV = BENCH / "lf-venv"
LF_VERSION = "0.9.5"
TORCH = "torch==2.13.0"
# SmolLM2's own default system prompt, given explicitly so both tools render identical text.
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

COMMON = {
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_target": "q_proj,v_proj",
    "dataset": "bench",
    "cutoff_len": 1024,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4,
    "num_train_epochs": 1,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "logging_steps": 1,
    "save_steps": 100000,
    "seed": 42,
    "overwrite_output_dir": True,
    "report_to": "none",
    "bf16": False,
}


SCENARIOS = {
    "short": {"rows": 96, "keys": {}},
    "long": {
        "rows": 8,
        "keys": {"cutoff_len": 2048, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                 "lora_rank": 16, "lora_target": "all"},
    },
}  # fmt: skip


def offline_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def ensure_llamafactory() -> Path:
    """A venv with LLaMA-Factory on the pinned CPU torch; returns its llamafactory-cli."""
    cli = LF_VENV / "bin" / "llamafactory-cli"
    pip = [str(LF_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    if not cli.exists():
        print(f"installing LLaMA-Factory {LF_VERSION} into {LF_VENV} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LF_VENV)], check=True)
        subprocess.run([*pip, TORCH], check=True)
        subprocess.run([*pip, f"llamafactory=={LF_VERSION}", TORCH], check=True)
    # pip pulls CUDA-linked torchvision/torchaudio that break imports on the CPU torch. LLaMA-Factory
    # imports torchaudio unconditionally, so keep its Python code but remove its native libraries
    # (torchaudio then skips loading them); torchvision is optional and goes entirely.
    subprocess.run(
        [str(LF_VENV / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=False
    )
    for lib in LF_VENV.glob("lib/python*/site-packages/torchaudio/lib/*.so"):
        lib.unlink()
    return cli


def write_data(workdir: Path, rows: int, scenario: str) -> Path:
    """The scenario's rows with an explicit system prompt: identity and replay from data/ cycled to `rows`
    (short), or long reports from scripts/make_long_rows.py (long)."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if scenario == "long":
        made = data_dir / "long.json"
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_long_rows.py"), str(made), "--rows", str(rows)],
                       check=True, env=offline_env())  # fmt: skip
        source = json.loads(made.read_text(encoding="utf-8"))
    else:
        source = []
        for name in ("identity.json", "replay.json"):
            source += json.loads((REPO / "data" / name).read_text(encoding="utf-8"))
    data = [{**source[i % len(source)], "system": SYSTEM} for i in range(rows)]
    (data_dir / "bench.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    info = {
        "bench": {
            "file_name": "bench.json",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
        }
    }
    (data_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return data_dir


def count_tokens(data_dir: Path, model_dir: Path, cutoff_len: int) -> int:
    """Non-padding tokens of one epoch: the sum of the row lengths (padding is not counted)."""
    from transformers import AutoTokenizer

    from tuneforge.config import DataArguments
    from tuneforge.data.dataset import build_sft_data

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = build_sft_data(
        DataArguments(dataset=["bench"], dataset_dir=str(data_dir), cutoff_len=cutoff_len), tokenizer
    )
    return sum(len(e.input_ids) for e in data.train)


def run_measured(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of a child process."""
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            command, stdout=fh, stderr=subprocess.STDOUT, env=offline_env(), cwd=log.parent
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(command)} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2


def train_runtime(output_dir: Path) -> float:
    return float(json.loads((output_dir / "train_results.json").read_text())["train_runtime"])


def run_tool(
    tool: str, mode: str, workdir: Path, data_dir: Path, model_dir: Path, lf_cli: Path, keys: dict
) -> dict:
    out = workdir / f"{tool}-{mode}"
    cfg = {
        **COMMON,
        **keys,
        "model_name_or_path": str(model_dir),
        "dataset_dir": str(data_dir),
        "output_dir": str(out),
    }
    if tool == "llamafactory":
        cfg.update(template="smollm2", plot_loss=False, preprocessing_num_workers=1, overwrite_cache=True)
        if mode == "same":
            cfg["disable_gradient_checkpointing"] = True
        command = [str(lf_cli), "train"]
    else:
        if mode == "same":
            cfg["gradient_checkpointing"] = False
        command = [str(REPO / ".venv" / "bin" / "tuneforge"), "train"]
    path = workdir / f"{tool}-{mode}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    wall, rss = run_measured([*command, str(path)], workdir / f"{tool}-{mode}.log")
    return {"tool": tool, "mode": mode, "train_s": train_runtime(out), "wall_s": wall, "rss_gb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="short", choices=sorted(SCENARIOS))
    parser.add_argument("--rows", type=int, default=None, help="training rows (one epoch)")
    parser.add_argument("--modes", default="defaults,same", help="defaults, same, or both")
    args = parser.parse_args()

    from tuneforge.model.sources import resolve_model_path

    model_dir = resolve_model_path("smollm2-135m-instruct")
    lf_cli = ensure_llamafactory()
    workdir = BENCH / time.strftime("run-%Y%m%d-%H%M%S")
    shutil.rmtree(workdir, ignore_errors=True)
    scenario = SCENARIOS[args.scenario]
    rows = args.rows or scenario["rows"]
    keys = {**COMMON, **scenario["keys"]}
    data_dir = write_data(workdir, rows, args.scenario)
    tokens = count_tokens(data_dir, model_dir, keys["cutoff_len"])
    print(
        f"{args.scenario}: {rows} rows, {tokens} non-padding tokens, LoRA r{keys['lora_rank']} {keys['lora_target']}, "
        f"batch {keys['per_device_train_batch_size']} x {keys['gradient_accumulation_steps']}, cutoff "
        f"{keys['cutoff_len']}, cpu threads {os.cpu_count()}; logs in {workdir}",
        flush=True,
    )

    results = []
    for mode in args.modes.split(","):
        for tool in ("llamafactory", "tuneforge"):
            result = run_tool(tool, mode, workdir, data_dir, model_dir, lf_cli, scenario["keys"])
            result["tok_s"] = tokens / result["train_s"]
            results.append(result)
            print(
                f"  {mode:8s} {tool:12s} {result['tok_s']:7.1f} tokens/s  peak RSS {result['rss_gb']:.2f} GB "
                f"(train {result['train_s']:.0f} s, process {result['wall_s']:.0f} s)",
                flush=True,
            )

    print("\nmode      tool          tokens/s  peak RSS GB   vs LLaMA-Factory")
    for mode in args.modes.split(","):
        lf, tf = (
            next(r for r in results if r["mode"] == mode and r["tool"] == t)
            for t in ("llamafactory", "tuneforge")
        )
        label = "defaults" if mode == "defaults" else "same computation (no checkpointing)"
        print(f"{mode:9s} llamafactory  {lf['tok_s']:8.1f}  {lf['rss_gb']:11.2f}")
        print(
            f"{mode:9s} tuneforge     {tf['tok_s']:8.1f}  {tf['rss_gb']:11.2f}   "
            f"{tf['tok_s'] / lf['tok_s']:.2f}x speed, {tf['rss_gb'] / lf['rss_gb']:.2f}x memory  [{label}]"
        )


if __name__ == "__main__":
    main()
