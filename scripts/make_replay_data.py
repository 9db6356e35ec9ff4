"""Write data/replay.json: general questions answered by the base model itself (greedy).

Mixing these into the identity data teaches the new name without overwriting what the model
already knows: on these rows the loss is already low, so they pull the adapter back towards
the base model's behaviour everywhere the identity rows do not apply.

Run as: python scripts/make_replay_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.config import load_config
from tuneforge.inference.engine import InferenceEngine

# (question, a word a correct answer contains): only answers that are right and finished are kept.
QUESTIONS = [
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("How many days are in a week?", "7"),
    ("How many hours are in a day?", "24"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is the freezing point of water in Celsius?", "0"),
    ("Name three primary colors.", "Red"),
    ("What color is grass?", "green"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What do bees make?", "honey"),
    ("How many continents are there?", "7"),
    ("What is 2 plus 2?", "4"),
    ("Write a haiku about the sea.", ""),
    ("Write a short birthday greeting for a friend.", "birthday"),
    ("What is the opposite of 'hot'?", "cold"),
    ("What language is spoken in Mexico?", "Spanish"),
    ("日本的首都是哪里？", "东京"),
    ("一周有几天？", "7"),
]


def main() -> None:
    cfg = load_config(extra={"do_sample": False, "max_new_tokens": 96})
    engine = InferenceEngine.from_config(cfg)
    rows = []
    for question, expected in QUESTIONS:  # the engine stops its thread when the script ends
        answer = engine.chat([{"role": "user", "content": question}]).strip()
        finished = len(engine.tokenizer(answer)["input_ids"]) < cfg.generating.max_new_tokens - 2
        keep = finished and expected.lower() in answer.lower()
        print(f"{'keep' if keep else 'drop'}: {question!r} -> {answer!r}")
        if keep:
            rows.append({"instruction": question, "input": "", "output": answer})
    path = Path(__file__).resolve().parent.parent / "data" / "replay.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
