"""Load on `tuneforge serve`: 1, 4 and 8 concurrent streaming chat completions.

Starts the server in this process on a free loopback port (SmolLM2-135M by default), then for each
concurrency level runs that many client threads with the official `openai` client, each sending
`--requests` streamed chat completions one after another. Prints, per level: generated tokens per
second over the whole level, time to first token (p50/p95), and errors.

Run as: python bench/serve_load.py [--levels 1,4,8] [--requests 3] [--max_tokens 64] [--model NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

QUESTIONS = [
    "Write a short story about a robot learning to paint.",
    "Explain how a rainbow forms, step by step.",
    "List some tips for learning a new language.",
    "Describe the water cycle to a ten-year-old.",
    "What makes a good cup of tea? Give details.",
    "Summarise the plot of a heist movie you invent.",
    "Why is the sky blue? Explain at length.",
    "Give a recipe for pancakes with every step.",
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_stream(client, model: str, question: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first content piece, completion tokens) of one streamed chat completion."""
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return (first if first is not None else float("nan")), tokens


def run_level(client, model: str, streams: int, requests: int, max_tokens: int) -> dict[str, float]:
    ttfts: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for r in range(requests):
            try:
                ttft, n = one_stream(client, model, QUESTIONS[(index + r) % len(QUESTIONS)], max_tokens)
                with lock:
                    ttfts.append(ttft)
                    tokens.append(n)
            except Exception as err:  # counted and shown, the run goes on
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        print(f"  errors at {streams} streams: {errors[:3]}", file=sys.stderr)
    return {
        "streams": streams,
        "tokens_per_second": sum(tokens) / elapsed,
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
        "errors": len(errors),
        "requests": len(tokens) + len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--requests", type=int, default=3, help="requests per stream, one after another")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    import openai

    from tuneforge.config import GeneratingArguments, ModelArguments
    from tuneforge.inference.engine import InferenceEngine
    from tuneforge.serve.server import BackgroundServer

    engine = InferenceEngine(
        ModelArguments(model_name_or_path=args.model), GeneratingArguments(), max_batch_size=8
    )
    levels = [int(x) for x in args.levels.split(",")]
    with BackgroundServer(engine) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=600)
        one_stream(client, engine.base_name, "Hello", 32)  # warm-up: the first passes are slower
        results = [run_level(client, engine.base_name, n, args.requests, args.max_tokens) for n in levels]
    engine.close()

    print(
        f"\ntuneforge serve, {args.model}, {args.max_tokens} tokens per answer, greedy, {os.cpu_count()} CPUs"
    )
    print(f"{'streams':>8} {'tokens/s':>10} {'vs 1':>6} {'TTFT p50':>10} {'TTFT p95':>10} {'errors':>7}")
    base = results[0]["tokens_per_second"]
    for r in results:
        print(
            f"{r['streams']:>8} {r['tokens_per_second']:>10.1f} {r['tokens_per_second'] / base:>5.2f}x "
            f"{r['ttft_p50']:>9.3f}s {r['ttft_p95']:>9.3f}s {r['errors']:>4}/{r['requests']}"
        )
    print(f"(batch sizes seen by the engine: max {max(engine.batch_sizes)})")


if __name__ == "__main__":
    main()
