"""Rollout speed of the online stages (grpo, ppo, online_dpo): tuneforge's engine core against transformers'
`model.generate`, on SmolLM2-135M-Instruct with a LoRA adapter (as the policy is during training), fp32.

Both sample the same prompts (the identity set's questions through SmolLM2's chat template), `n` answers each,
at temperature 1.0 up to `max_new_tokens`; answer tokens per second are the tokens actually sampled (up to
and including each end token) over wall time, medians of alternating runs.
Run: python bench/rollouts.py [--runs 3] [--n 4] [--prompts 8] [--max-new-tokens 96]  (minutes on 2 cores)."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def policy_and_prompts(count: int):  # noqa: ANN201 - (model, tokenizer, prompts)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.model.sources import resolve_model_path

    path = resolve_model_path("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = LoraConfig(r=8, target_modules="all-linear", lora_alpha=16, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    rows = json.loads((REPO / "data" / "identity.json").read_text(encoding="utf-8"))
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": row["instruction"]}], add_generation_prompt=True, tokenize=True
        )
        for row in rows[:count]
    ]
    prompts = [list(p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p) for p in prompts]
    return model, tokenizer, prompts


def main() -> None:
    import torch

    from tuneforge.train.rl import sample_answers

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, tokenizer, prompts = policy_and_prompts(args.prompts)
    speeds: dict[str, list[float]] = {"engine": [], "transformers": []}
    lengths: dict[str, list[float]] = {"engine": [], "transformers": []}
    for run in range(args.runs):
        for backend in ("engine", "transformers") if run % 2 == 0 else ("transformers", "engine"):
            torch.manual_seed(run)
            start = time.perf_counter()
            answers = sample_answers(model, tokenizer, prompts, args.n, args.max_new_tokens, 1.0, backend)
            seconds = time.perf_counter() - start
            tokens = sum(len(a) for a in answers)
            speeds[backend].append(tokens / seconds)
            lengths[backend].append(tokens / len(answers))
            print(
                f"run {run + 1} {backend:12s} {tokens:6d} tokens {seconds:7.2f} s {tokens / seconds:8.1f} tokens/s"
            )
    engine, generate = statistics.median(speeds["engine"]), statistics.median(speeds["transformers"])
    print(
        f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}: "
        f"{args.prompts} prompts x {args.n} answers, max_new_tokens {args.max_new_tokens}, temperature 1.0"
    )
    print(f"{'backend':14s}{'tokens/s':>10s}{'mean answer':>14s}")
    for name, value in (("engine", engine), ("transformers", generate)):
        print(f"{name:14s}{value:10.1f}{statistics.mean(lengths[name]):14.1f}")
    print(f"engine / generate: {engine / generate:.2f}x")


if __name__ == "__main__":
    main()
