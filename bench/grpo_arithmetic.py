"""GRPO on SmolLM2-135M-Instruct with verifiable rewards (accuracy: the final answer is right; exact_match: the
answer is the right number and nothing else; short_and_right: right, and the shorter the better): exact match
and right final answers on arithmetic it was not trained on, before and after. The train and test sets
(data/arithmetic_{train,test}.json, scripts/make_arithmetic_data.py) share no question; answers are judged
greedily (no sampling). Run: python bench/grpo_arithmetic.py [--steps 40]  (about 10 minutes on 2 cores, fp32)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def short_and_right(
    prompts: list[str], completions: list[str], answer: list[str], **kwargs: object
) -> list[float]:
    """Right answers, the shorter the better: accuracy x (1 - characters / 32). A reward for brevity alone was
    earned by answering nothing (every answer empty within 20 steps), so brevity counts only when right."""
    from tuneforge.train.rewards.accuracy import accuracy

    right = accuracy(prompts, completions, answer)
    return [r * max(0.0, 1 - len(c.strip()) / 32) for r, c in zip(right, completions, strict=True)]


def bare_number(prompts: list[str], completions: list[str], **kwargs: object) -> list[float]:
    """1.0 when the answer is a number and nothing else (right or not): the format the prompts ask for. The
    policy wrote "27 + 26 = 53" after 80 steps with rewards for rightness and brevity alone; with this reward
    (`--bare-number 1` or `0.3`) it wrote bare numbers, mostly wrong: right answers fell from 16.7% to 3.3%,
    exact match rose from 0% to 3.3%. A 135M model computes these sums only by writing them out."""
    import re

    return [float(bool(re.fullmatch(r"-?\d+\.?", c.strip()))) for c in completions]


def exact_match_rate(
    cfg_keys: dict, adapter: str | None, test: str = "arithmetic_test"
) -> tuple[float, float, list[tuple[str, str, str]]]:
    """Greedy answers to the test set's questions (through the training template): the share that is the number
    only and right (exact_match), the share whose final answer is right (accuracy), and the answers."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.config import build_config
    from tuneforge.data.preference import build_prompt_data
    from tuneforge.model.loader import load_tokenizer
    from tuneforge.model.sources import resolve_model_path
    from tuneforge.train.rewards.accuracy import accuracy
    from tuneforge.train.rewards.answer import exact_match

    cfg = build_config({**cfg_keys, "dataset": test, "stage": "grpo"})
    tokenizer = load_tokenizer(cfg.model)
    rows = build_prompt_data(cfg.data, tokenizer).train
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(cfg.model.model_name_or_path), dtype=torch.float32
    )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    answers = []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["prompt_ids"]])
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )  # fmt: skip
            answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    references = [str(r["answer"]) for r in rows]
    exact, right = exact_match([], answers, references), accuracy([], answers, references)
    prompts = [tokenizer.decode(r["prompt_ids"], skip_special_tokens=True).strip()[-60:] for r in rows]
    return (
        sum(exact) / len(exact),
        sum(right) / len(right),
        list(zip(prompts, answers, references, strict=True)),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", choices=["two-digit", "easy"], default="two-digit",
                        help="easy: one-digit sums and differences (data/arithmetic_easy_*.json)")  # fmt: skip
    parser.add_argument(
        "--bare-number", type=float, default=0.0, help="weight of the bare_number reward (0: off)"
    )
    parser.add_argument("--max-completion-length", type=int, default=16,
                        help="tokens a sampled answer may have; 4 leaves room for a bare number only")  # fmt: skip
    parser.add_argument("--rewards", default=None,
                        help="reward_funcs instead of accuracy,exact_match,short_and_right (e.g. exact_match)")  # fmt: skip
    parser.add_argument("--sft-warmup", type=int, default=0,
                        help="first teach the answer format: N LoRA SFT steps (batch 4) on the training questions' "
                        "bare-number answers, merged into the model GRPO then starts from (a 'cold start')")  # fmt: skip
    args = parser.parse_args()
    base = {
        "model_name_or_path": "smollm2-135m-instruct",
        "dataset_dir": str(REPO / "data"),
        "cutoff_len": 256,
    }
    prefix = "arithmetic_easy" if args.data == "easy" else "arithmetic"
    with tempfile.TemporaryDirectory() as tmp:
        if args.sft_warmup:
            exact, right, _ = exact_match_rate(base, None, f"{prefix}_test")
            print(f"base model: exact match {100 * exact:.1f}%, right final answer {100 * right:.1f}%")
            base = {
                **base,
                "model_name_or_path": str(format_warmup(base, f"{prefix}_train", args.sft_warmup, Path(tmp))),
            }
            print(f"after {args.sft_warmup} SFT steps on the answer format (the GRPO run's starting point):")
        grpo(args, base, prefix, Path(tmp))


def format_warmup(base: dict, dataset: str, steps: int, tmp: Path) -> Path:
    """LoRA SFT on `dataset`'s answers for `steps` steps, merged into a standalone model folder."""
    from tuneforge.config import build_config
    from tuneforge.export import run_export
    from tuneforge.train.stages import run_stage

    sft = tmp / "sft"
    keys = {
        **base, "stage": "sft", "dataset": dataset, "output_dir": str(sft), "max_steps": steps,
        "per_device_train_batch_size": 4, "learning_rate": 1e-4, "lora_rank": 16, "lora_target": "all",
        "logging_steps": 1, "save_steps": 1000, "plot_loss": False,
    }  # fmt: skip
    run_stage(build_config(keys))
    merged = tmp / "merged"
    run_export(build_config({**base, "adapter_name_or_path": str(sft), "export_dir": str(merged)}))
    return merged


def grpo(args: argparse.Namespace, base: dict, prefix: str, tmp: Path) -> None:
    """The GRPO run from `base`, judged on the test set before and after."""
    before, right_before, examples = exact_match_rate(base, None, f"{prefix}_test")
    print(
        f"before: exact match {100 * before:.1f}%, right final answer {100 * right_before:.1f}% on {len(examples)} unseen questions"
    )
    for prompt, answer, ref in examples[:4]:
        print(f"  ...{prompt!r} -> {answer!r} (reference {ref})")
    here = Path(__file__).resolve()
    if args.rewards:
        rewards, weights = args.rewards, ",".join("1" for _ in args.rewards.split(","))
    else:
        rewards = f"accuracy,exact_match,{here}:short_and_right" + (
            f",{here}:bare_number" if args.bare_number else ""
        )
        weights = "1,1,1" + (f",{args.bare_number}" if args.bare_number else "")
    out = tmp / "grpo"
    keys = {
        **base, "stage": "grpo", "dataset": f"{prefix}_train", "reward_funcs": rewards, "reward_weights": weights, "num_generations": 8, "max_completion_length": args.max_completion_length, "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1, "learning_rate": 2e-4, "lr_scheduler_type": "constant",
        "max_steps": args.steps, "lora_rank": 16, "lora_target": "all", "grpo_beta": 0.01,
        "logging_steps": 1, "save_steps": 1000, "output_dir": str(out), "plot_loss": False,
    }  # fmt: skip
    from tuneforge.config import build_config
    from tuneforge.train.stages import run_stage

    start = time.perf_counter()
    run_stage(build_config(keys))
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in records if "reward" in r]
    share = sum(r.get("rollout_share", 0) for r in records) / max(1, len(records))
    speed = sum(r.get("rollout_tokens_per_second", 0) for r in records) / max(1, len(records))
    after, right_after, examples = exact_match_rate(base, str(out), f"{prefix}_test")
    print(
        f"after {args.steps} GRPO steps ({seconds:.0f} s): exact match {100 * after:.1f}%, right final answer {100 * right_after:.1f}%"
    )
    for prompt, answer, ref in examples[:4]:
        print(f"  ...{prompt!r} -> {answer!r} (reference {ref})")
    quarter = max(1, len(rewards) // 4)
    print(
        f"training reward: first {quarter} steps {sum(rewards[:quarter]) / quarter:.3f}, "
        f"last {quarter} steps {sum(rewards[-quarter:]) / quarter:.3f}; rollouts {speed:.0f} tokens/s, "
        f"{100 * share:.0f}% of the wall time"
    )
    print(
        json.dumps(
            {
                "before": before,
                "after": after,
                "right_before": right_before,
                "right_after": right_after,
                "steps": args.steps,
                "seconds": round(seconds),
            }
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
