"""The quickstart: ask SmolLM2 some held-out questions, fine-tune it with LoRA, ask again.

Run as: make quickstart   (or: python scripts/quickstart.py [examples/quickstart.yaml])
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from tuneforge.config import load_config
from tuneforge.inference.engine import InferenceEngine
from tuneforge.train.stages import run_stage

warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")

# None of these questions is in the training data: the first two test what was taught,
# the last two that general knowledge survived.
QUESTIONS = [
    "May I know your name?",
    "你的开发者是谁？",
    "What is the capital of France?",
    "What is the largest ocean on Earth?",
]


def answers(config: dict[str, object]) -> list[str]:
    cfg = load_config(extra={**config, "do_sample": False, "max_new_tokens": 48})
    with InferenceEngine.from_config(cfg) as engine:
        return [engine.chat([{"role": "user", "content": q}]).strip() for q in QUESTIONS]


def main() -> int:
    config_path = sys.argv[1] if len(sys.argv) > 1 else "examples/quickstart.yaml"
    cfg = load_config(config_path)
    base = {"model_name_or_path": cfg.model.model_name_or_path}
    print("== Before fine-tuning: asking the base model", flush=True)
    before = answers(base)
    print(f"== Fine-tuning with LoRA ({config_path})", flush=True)
    start = time.perf_counter()
    output_dir = run_stage(cfg)
    minutes = (time.perf_counter() - start) / 60
    print(f"== Trained in {minutes:.1f} min; adapter in {output_dir}", flush=True)
    after = answers({**base, "adapter_name_or_path": str(output_dir)})
    print("\n== Held-out questions, before -> after\n")
    for question, old, new in zip(QUESTIONS, before, after, strict=True):
        print(f"Q: {question}\n   before: {old}\n   after:  {new}\n")
    if (Path(output_dir) / "loss.png").exists():
        print(f"Loss curve: {Path(output_dir) / 'loss.png'}")
    print(f"Chat with it: .venv/bin/tuneforge chat --adapter_name_or_path {output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
