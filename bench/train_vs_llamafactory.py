"""Training SmolLM2-135M in tuneforge and in LLaMA-Factory: same rows, same config, same machine.

Prints non-padding tokens/s of the training loop, peak RSS of the whole process and model FLOPs utilisation
for each tool, twice: with each tool's own defaults for what the YAML leaves out (LLaMA-Factory turns
gradient checkpointing on), and with the same computation (checkpointing off in both); `--modes` may add
`checkpointing` (checkpointing on in both: the same computation, recomputation included). `--repeats N` runs
each pair N times, alternating the tools, and prints medians.

Scenarios: `short` (default): alpaca-style rows, cutoff 1024, batch 1 x 8, LoRA r8 on q/v; `long`: answers of
1,000-2,000 tokens in English and Chinese (scripts/make_long_rows.py), cutoff 2048, batch 2, LoRA r16 on
all linear layers, where the logits of long answers decide the memory; `full`: the short rows with full
fine-tuning; `dpo`: DPO (sigmoid, beta 0.1, LoRA r8 q/v) on the shipped identity_pref pairs.

MFU: the model FLOPs the run needs (tuneforge's count of its training passes, `model_flops` in
train_results.json; the same computation for both tools, recomputation not counted) over train seconds x
this machine's fp32 matmul peak, measured here at the model's projection shapes (tuneforge.train.flops).
The first steps' losses of both tools are printed side by side, and every step must have a gradient norm
above zero (a tool that skipped the backward pass must not win).

Run as: python bench/train_vs_llamafactory.py [--scenario short|long|full|dpo] [--rows N]
        [--modes defaults,same,checkpointing] [--repeats N]
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
    # the LLaMA-Factory user's YAML names its template; tuneforge renders it token for token and labels the same
    # tokens (with SmolLM2's own Jinja template instead it would not train the newline after <|im_end|>, and the
    # first losses would differ by a token per row in the denominator)
    "template": "smollm2",
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
    "full": {"rows": 48, "keys": {"finetuning_type": "full", "learning_rate": 1.0e-5}, "drop": ["lora_rank", "lora_target"]},
    "dpo": {"rows": 48, "keys": {"stage": "dpo", "pref_beta": 0.1, "pref_loss": "sigmoid", "learning_rate": 5.0e-6}},
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
    if scenario == "dpo":
        pairs = json.loads((REPO / "data" / "identity_pref.json").read_text(encoding="utf-8"))
        data = [{**pairs[i % len(pairs)], "system": SYSTEM} for i in range(rows)]
        (data_dir / "bench.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        columns = {
            "prompt": "instruction",
            "query": "input",
            "chosen": "chosen",
            "rejected": "rejected",
            "system": "system",
        }
        info = {"bench": {"file_name": "bench.json", "ranking": True, "columns": columns}}
        (data_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
        return data_dir
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


def train_results(output_dir: Path) -> dict:
    return json.loads((output_dir / "train_results.json").read_text())


def step_log(output_dir: Path) -> list[dict]:
    """The training log records (loss, grad_norm) of a run, from the Trainer's trainer_state.json."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


def run_tool(
    tool: str,
    mode: str,
    workdir: Path,
    data_dir: Path,
    model_dir: Path,
    lf_cli: Path,
    scenario: dict,
    tag: str,
) -> dict:
    out = workdir / f"{tool}-{mode}-{tag}"
    keys = {k: v for k, v in {**COMMON, **scenario["keys"]}.items() if k not in scenario.get("drop", ())}
    cfg = {**keys, "model_name_or_path": str(model_dir), "dataset_dir": str(data_dir), "output_dir": str(out)}
    if tool == "llamafactory":
        cfg.update(plot_loss=False, preprocessing_num_workers=1, overwrite_cache=True)
        if mode in ("same", "checkpointing"):
            cfg["disable_gradient_checkpointing"] = mode == "same"
        command = [str(lf_cli), "train"]
    else:
        if mode in ("same", "checkpointing"):
            cfg["gradient_checkpointing"] = mode == "checkpointing"
        command = [str(REPO / ".venv" / "bin" / "tuneforge"), "train"]
    path = workdir / f"{tool}-{mode}-{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    wall, rss = run_measured([*command, str(path)], workdir / f"{tool}-{mode}-{tag}.log")
    results, steps = train_results(out), step_log(out)
    if not steps or any(not s.get("grad_norm") for s in steps):
        raise SystemExit(
            f"{tool} {mode}: a step without a gradient norm above zero ({out}/trainer_state.json)"
        )
    return {
        "tool": tool, "mode": mode, "train_s": float(results["train_runtime"]), "wall_s": wall, "rss_gb": rss,
        "losses": [s["loss"] for s in steps], "model_flops": results.get("model_flops"),
        "tokens": results.get("num_tokens_trained"),
    }  # fmt: skip


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="short", choices=sorted(SCENARIOS))
    parser.add_argument("--rows", type=int, default=None, help="training rows (one epoch)")
    parser.add_argument(
        "--modes", default="defaults,same", help="comma-separated: defaults, same, checkpointing"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each tool per mode (medians printed)")
    args = parser.parse_args()

    import torch

    from tuneforge.model.sources import resolve_model_path
    from tuneforge.train.flops import gemm_peak
    from tuneforge.utils.allocator import find_jemalloc

    model_dir = resolve_model_path("smollm2-135m-instruct")
    lf_cli = ensure_llamafactory()
    workdir = BENCH / time.strftime("run-%Y%m%d-%H%M%S")
    shutil.rmtree(workdir, ignore_errors=True)
    scenario = SCENARIOS[args.scenario]
    rows = args.rows or scenario["rows"]
    keys = {**COMMON, **scenario["keys"]}
    data_dir = write_data(workdir, rows, args.scenario)
    tokens = None if args.scenario == "dpo" else count_tokens(data_dir, model_dir, keys["cutoff_len"])
    config = json.loads((Path(model_dir) / "config.json").read_text())
    peak = gemm_peak(
        torch.device("cpu"), torch.float32, config["hidden_size"], config["intermediate_size"], fresh=True
    )
    method = (
        "full" if keys["finetuning_type"] == "full" else f"LoRA r{keys['lora_rank']} {keys['lora_target']}"
    )
    print(
        f"{args.scenario}: {keys['stage']}, {rows} rows, {tokens or 'chosen+rejected'} non-padding tokens, {method}, "
        f"batch {keys['per_device_train_batch_size']} x {keys['gradient_accumulation_steps']}, cutoff "
        f"{keys['cutoff_len']}, cpu threads {os.cpu_count()}, fp32 matmul peak {peak / 1e9:.1f} GFLOP/s, "
        f"tuneforge's allocator {'jemalloc' if find_jemalloc() else 'system malloc (no jemalloc found)'}; "
        f"logs in {workdir}",
        flush=True,
    )

    results = []
    # defaults first: LLaMA-Factory's defaults run is also its checkpointing run
    modes = sorted(args.modes.split(","), key=lambda m: m != "defaults")
    for repeat in range(args.repeats):
        for mode in modes:
            tools = ("llamafactory", "tuneforge") if repeat % 2 == 0 else ("tuneforge", "llamafactory")
            for tool in tools:
                if tool == "llamafactory" and mode == "checkpointing" and "defaults" in modes:
                    # LLaMA-Factory checkpoints by default: its defaults run of this repeat is this run
                    done = next(
                        r
                        for r in results
                        if r["tool"] == tool and r["mode"] == "defaults" and r["tag"] == repeat
                    )
                    results.append({**done, "mode": mode})
                    continue
                result = run_tool(tool, mode, workdir, data_dir, model_dir, lf_cli, scenario, str(repeat))
                result["tag"] = repeat
                results.append(result)
                print(
                    f"  run {repeat + 1}: {mode:8s} {tool:12s} train {result['train_s']:.0f} s, peak RSS "
                    f"{result['rss_gb']:.2f} GB (process {result['wall_s']:.0f} s)",
                    flush=True,
                )
    ours = [r for r in results if r["tool"] == "tuneforge"]
    tokens = tokens or ours[0]["tokens"]  # DPO: the chosen and rejected tokens tuneforge counted
    flops = ours[0]["model_flops"]

    print(f"\nmedians of {args.repeats} run(s) each, {time.strftime('%Y-%m-%d')}")
    print("mode      tool          tokens/s  peak RSS GB    MFU   vs LLaMA-Factory")
    for mode in modes:
        row = {}
        for tool in ("llamafactory", "tuneforge"):
            mine = [r for r in results if r["mode"] == mode and r["tool"] == tool]
            seconds = median([r["train_s"] for r in mine])
            row[tool] = (
                tokens / seconds,
                median([r["rss_gb"] for r in mine]),
                flops / (seconds * peak) if flops else 0,
            )
        (lf_speed, lf_rss, lf_mfu), (tf_speed, tf_rss, tf_mfu) = row["llamafactory"], row["tuneforge"]
        label = {
            "defaults": "defaults",
            "same": "same computation (no checkpointing)",
            "checkpointing": "same computation (checkpointing in both)",
        }[mode]
        print(f"{mode:9s} llamafactory  {lf_speed:8.1f}  {lf_rss:11.2f}  {100 * lf_mfu:5.1f}%")
        print(
            f"{mode:9s} tuneforge     {tf_speed:8.1f}  {tf_rss:11.2f}  {100 * tf_mfu:5.1f}%   "
            f"{tf_speed / lf_speed:.2f}x speed, {tf_rss / lf_rss:.2f}x memory  [{label}]"
        )
        first = {
            t: next(r for r in results if r["mode"] == mode and r["tool"] == t)["losses"][:3] for t in row
        }
        print(
            f"          first losses: llamafactory {', '.join(f'{x:.4f}' for x in first['llamafactory'])}; "
            f"tuneforge {', '.join(f'{x:.4f}' for x in first['tuneforge'])}"
        )


if __name__ == "__main__":
    main()
