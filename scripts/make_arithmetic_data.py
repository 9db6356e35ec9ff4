"""Write data/arithmetic_train.json and data/arithmetic_test.json: two-number sums and differences asked in
English and Chinese, answered with the number only, for GRPO with a verifiable reward (exact_match, accuracy),
and data/arithmetic_easy_{train,test}.json with one-digit numbers (sums a 135M model knows by heart, so GRPO
can teach the answer's form). Each pair of files shares no question. Run: python scripts/make_arithmetic_data.py"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
ASK = [
    "What is {a} {op} {b}? Reply with the number only.",
    "Compute {a} {op} {b}. Answer with just the number.",
    "计算 {a} {op} {b}，只回答数字。",
]


def rows(
    rng: random.Random, count: int, seen: set[tuple[int, str, int]], top: int = 60
) -> list[dict[str, str]]:
    out = []
    while len(out) < count:
        a, b, op = rng.randint(2, top), rng.randint(2, top), rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        value = a + b if op == "+" else a - b
        out.append({"instruction": rng.choice(ASK).format(a=a, op=op, b=b), "output": str(value)})
    return out


def main() -> None:
    rng = random.Random(7)
    seen: set[tuple[int, str, int]] = set()
    parts = {"arithmetic_train": rows(rng, 200, seen), "arithmetic_test": rows(rng, 60, seen)}
    easy: set[tuple[int, str, int]] = set()  # 2..9 with both signs: 96 distinct questions
    parts |= {"arithmetic_easy_train": rows(rng, 64, easy, 9), "arithmetic_easy_test": rows(rng, 32, easy, 9)}
    for name, part in parts.items():
        (DATA / f"{name}.json").write_text(
            json.dumps(part, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
    info_path = DATA / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    for name in parts:
        info[name] = {"file_name": f"{name}.json"}
    info_path.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
