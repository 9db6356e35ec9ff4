"""Preprocessing speed: 50,000 alpaca rows templated and tokenized by tuneforge and by LLaMA-Factory.

Both tokenize the same rows with SmolLM2's tokenizer and ChatML layout, cutoff 1024, one process
each; the figure is rows per second of the preprocessing call alone (imports and tokenizer loading
excluded), for a first run (caches overwritten) and a second run that may use each tool's cache;
the median of --repeat alternating runs, since this machine's speed drifts by a third between runs.

Run as: python bench/preprocess_vs_llamafactory.py [--rows 50000] [--workers 1]
LLaMA-Factory is installed into .bench/lf-venv on first use (see train_vs_llamafactory.py).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_vs_llamafactory import LF_VENV, ensure_llamafactory, offline_env  # noqa: E402

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "models",
    "learn",
    "from",
    "data",
    "and",
    "tokens",
    "answer",
    "every",
    "question",
    "数据",
    "模型",
    "训练",
    "回答",
    "问题",
    "语言",
    "学习",
]

LF_SCRIPT = """
import json, sys, time
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
args = json.loads(sys.argv[1])
model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
tokenizer_module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
start = time.perf_counter()
module = get_dataset(template, model_args, data_args, training_args, "sft", **tokenizer_module)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": len(module["train_dataset"])}))
"""


def write_rows(folder: Path, count: int) -> None:
    rng = random.Random(0)

    def words(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    rows = [
        {
            "instruction": words(5, 40),
            "input": words(3, 30) if rng.random() < 0.4 else "",
            "output": words(10, 150),
        }
        for _ in range(count)
    ]
    (folder / "rows.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = {"bench": {"file_name": "rows.json"}}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")


def time_tuneforge(folder: Path, model_dir: Path, workers: int, fresh: bool) -> tuple[float, int]:
    from transformers import AutoTokenizer

    from tuneforge.config import DataArguments
    from tuneforge.data.dataset import build_sft_data

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = DataArguments(
        dataset=["bench"],
        dataset_dir=str(folder),
        template="chatml",
        cutoff_len=1024,
        preprocessing_num_workers=workers,
        overwrite_cache=fresh,
    )
    start = time.perf_counter()
    data = build_sft_data(args, tokenizer)
    return time.perf_counter() - start, len(data.train)


def time_llamafactory(
    folder: Path, model_dir: Path, workers: int, out: Path, fresh: bool
) -> tuple[float, int]:
    ensure_llamafactory()
    args = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "dataset": "bench",
        "dataset_dir": str(folder),
        "template": "chatml",
        "cutoff_len": 1024,
        "overwrite_cache": fresh,
        "preprocessing_num_workers": workers,
        "output_dir": str(out),
        "report_to": "none",
        "per_device_train_batch_size": 1,
    }
    result = subprocess.run(
        [str(LF_VENV / "bin" / "python"), "-c", LF_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        env=offline_env(),
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"LLaMA-Factory preprocessing failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures["seconds"], figures["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool; the median is shown")
    args = parser.parse_args()

    from tuneforge.model.sources import resolve_model_path

    model_dir = resolve_model_path("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_rows(folder, args.rows)
        timings: dict[str, list[tuple[tuple[float, int], tuple[float, int]]]] = {}
        for repeat in range(args.repeat):  # alternate the tools so that machine noise hits both alike
            for run, fresh in (("first run", True), ("second run (cache)", False)):
                if repeat == 0 and not fresh:  # LLaMA-Factory reads datasets' cache from the run after the
                    time_llamafactory(
                        folder, model_dir, args.workers, folder / "lf-out", fresh
                    )  # one writing it
                lf = time_llamafactory(folder, model_dir, args.workers, folder / "lf-out", fresh)
                tf = time_tuneforge(folder, model_dir, args.workers, fresh)
                timings.setdefault(run, []).append((lf, tf))
    figures = {
        run: (
            sorted((t[0] for t in pairs), key=lambda x: x[0])[len(pairs) // 2],
            sorted((t[1] for t in pairs), key=lambda x: x[0])[len(pairs) // 2],
        )
        for run, pairs in timings.items()
    }
    print(
        f"{args.rows} alpaca rows, SmolLM2 tokenizer, ChatML, cutoff 1024, {args.workers} worker(s), "
        f"median of {args.repeat} runs"
    )
    for run, ((lf_s, lf_rows), (tf_s, tf_rows)) in figures.items():
        print(f"{run}:")
        print(f"  llamafactory  {lf_rows / lf_s:8.0f} rows/s  ({lf_s:.1f} s, {lf_rows} rows)")
        print(f"  tuneforge     {tf_rows / tf_s:8.0f} rows/s  ({tf_s:.1f} s, {tf_rows} rows)")
        print(f"  ratio         {(tf_rows / tf_s) / (lf_rows / lf_s):8.2f}x")


if __name__ == "__main__":
    main()
