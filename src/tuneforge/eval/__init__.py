"""`tuneforge eval`: MMLU, C-Eval, CMMLU or your own multiple-choice set, scored as LLaMA-Factory scored them,
for a base model, a model with adapters, an exported folder, or the adapters and their base side by side
(`compare_base: true`, to see what fine-tuning cost or gained).

The benchmark is read and checked before any weights load; results go to `save_dir` as `results.json` (per
subject, per category, average, n) and `predictions.jsonl` (each question's answer and probabilities).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.eval.benchmarks import CATEGORIES, CHINA_SPECIFIC, Benchmark, load_benchmark
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import info


def results_folder(cfg: RunConfig) -> Path:
    folder = Path(cfg.eval.save_dir or Path("saves") / "eval" / str(cfg.eval.task))
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        if not cfg.training.overwrite_output_dir or not folder.is_dir():
            raise UserError(
                f"save_dir {folder} already holds results; choose another or set overwrite_output_dir: true"
            )
        shutil.rmtree(folder)
    return folder


def evaluate_model(
    model: Any, tokenizer: Any, bench: Benchmark, prompts: dict[str, list[list[int]]], batch_size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy per subject and category, and each question's prediction."""
    from tqdm import tqdm

    from tuneforge.eval.scoring import choice_ids, score_batch

    letters = choice_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    subjects: dict[str, Any] = {}
    predictions = []
    total = sum(len(q) for q in bench.questions.values())
    with tqdm(total=total, desc=f"evaluating {bench.name}_{bench.split}", unit="q", file=sys.stderr) as bar:
        for subject, questions in bench.questions.items():
            correct = 0
            for start in range(0, len(questions), batch_size):
                batch = questions[start : start + batch_size]
                for question, scored in zip(
                    batch,
                    score_batch(model, prompts[subject][start : start + batch_size], letters, pad),
                    strict=True,
                ):
                    correct += scored.predicted == question.answer
                    predictions.append(
                        {
                            "source": question.source,
                            "subject": subject,
                            "answer": question.answer,
                            "predicted": scored.predicted,
                            "probabilities": dict(zip("ABCD", scored.probabilities, strict=True)),
                        }
                    )
                bar.update(len(batch))
            subjects[subject] = {
                "accuracy": correct / len(questions),
                "n": len(questions),
                "correct": correct,
                "category": bench.categories[subject],
                "also": bench.also.get(subject, []),
            }
    return summarize(subjects), predictions


def summarize(subjects: dict[str, Any]) -> dict[str, Any]:
    """Per category and overall: correct answers over questions (every question counts once)."""
    categories = {}
    for category in (*CATEGORIES, CHINA_SPECIFIC):
        inside = [s for s in subjects.values() if category in (s["category"], *s.get("also", []))]
        n = sum(s["n"] for s in inside)
        if n:
            categories[category] = {"accuracy": sum(s["correct"] for s in inside) / n, "n": n}
    n = sum(s["n"] for s in subjects.values())
    return {
        "average": sum(s["correct"] for s in subjects.values()) / n,
        "n": n,
        "categories": categories,
        "subjects": subjects,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """Category rows and the average, one column per evaluated model (and the difference for two)."""
    labels = list(results)
    header = (
        f"{'':18s}"
        + "".join(f"{label:>10s}" for label in labels)
        + (f"{'diff':>10s}" if len(labels) == 2 else "")
    )
    lines = [header]
    rows = [c for c in (*CATEGORIES, CHINA_SPECIFIC) if any(c in r["categories"] for r in results.values())]
    for row in [*rows, "Average"]:
        values = [
            r["average"] if row == "Average" else r["categories"].get(row, {}).get("accuracy")
            for r in results.values()
        ]
        cells = "".join(f"{100 * v:10.2f}" if v is not None else f"{'-':>10s}" for v in values)
        if len(values) == 2 and None not in values:
            cells += f"{100 * (values[0] - values[1]):+10.2f}"
        lines.append(f"{row:18s}{cells}")
    return "\n".join(lines)


def run_eval(cfg: RunConfig) -> dict[str, Any]:
    """Evaluate as `cfg.eval` says; returns what results.json holds."""
    from tuneforge.data.template import chat_template_for, render_prompt, template_options
    from tuneforge.eval.scoring import messages
    from tuneforge.model.loader import load_for_inference, load_tokenizer, with_local_adapters

    e = cfg.eval
    bench = load_benchmark(str(e.task), e.task_dir, e.lang)  # every row checked before weights load
    folder = results_folder(cfg)
    model_args = with_local_adapters(cfg.model)
    tokenizer = load_tokenizer(model_args)
    template = chat_template_for(tokenizer, cfg.data.template, **template_options(cfg.data))
    prompts = {
        subject: [
            render_prompt(
                messages(q, bench.shots[subject][: e.n_shot], bench.names[subject], e.lang),
                tokenizer,
                template,
            )
            for q in questions
        ]
        for subject, questions in bench.questions.items()
    }
    runs = [("tuned" if model_args.adapter_name_or_path else "model", model_args)]
    if e.compare_base:
        if not model_args.adapter_name_or_path:
            raise UserError("compare_base compares adapters with their base; set adapter_name_or_path")
        runs.append(("base", model_args.model_copy(update={"adapter_name_or_path": None})))
    results: dict[str, Any] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    for label, args in runs:
        model = load_for_inference(args)
        results[label], predictions[label] = evaluate_model(model, tokenizer, bench, prompts, e.batch_size)
        del model
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "task": e.task,
        "n_shot": e.n_shot,
        "lang": e.lang,
        "model": cfg.model.model_name_or_path,
        "adapters": cfg.model.adapter_name_or_path,
        "results": results,
    }
    (folder / "results.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with (folder / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for label, rows in predictions.items():
            for row in rows:
                fh.write(json.dumps({"model": label, **row}, ensure_ascii=False) + "\n")
    print(table(results))
    info(f"results in {folder / 'results.json'}, each question in {folder / 'predictions.jsonl'}")
    return report
