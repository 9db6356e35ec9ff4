"""Write the small multiple-choice fixtures of tests/fixtures/eval/ in MMLU's, C-Eval's and CMMLU's layouts.

The questions are written for this project (arithmetic and word facts, English and Chinese), generated
from a fixed seed so the files never change: 5 dev and 10 test (or val) rows per subject.

Run as: python scripts/make_eval_fixtures.py
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval"
WORDS = ["apple", "river", "mountain", "cat", "window", "music", "garden", "sun", "pencil", "bridge", "ocean", "tree",
         "bread", "planet", "chair"]  # fmt: skip
HANZI = ["山", "水", "火", "木", "人", "口", "日", "月", "田", "目", "手", "心", "土", "石", "雨"]
PINYIN = [
    "shān",
    "shuǐ",
    "huǒ",
    "mù",
    "rén",
    "kǒu",
    "rì",
    "yuè",
    "tián",
    "mù",
    "shǒu",
    "xīn",
    "tǔ",
    "shí",
    "yǔ",
]


def choices(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], str]:
    options = [right, *rng.sample(sorted(set(wrong) - {right}), 3)]
    rng.shuffle(options)
    return options, "ABCD"[options.index(right)]


def arithmetic(rng: random.Random, zh: bool) -> list[str]:
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    right = a + b
    options, answer = choices(rng, str(right), [str(right + d) for d in (-3, -2, -1, 1, 2, 3, 10)])
    question = f"{a} 加 {b} 等于多少？" if zh else f"What is {a} + {b}?"
    return [question, *options, answer]


def words(rng: random.Random, zh: bool) -> list[str]:
    if zh:
        i = rng.randrange(len(HANZI))
        options, answer = choices(rng, PINYIN[i], PINYIN)
        return [f"汉字“{HANZI[i]}”的拼音是什么？", *options, answer]
    word = rng.choice(WORDS)
    right = len(word)
    options, answer = choices(rng, str(right), [str(right + d) for d in (-2, -1, 1, 2, 3)])
    return [f"How many letters does the word '{word}' have?", *options, answer]


def rows(make, seed: int, count: int, zh: bool) -> list[list[str]]:
    rng = random.Random(seed)
    return [make(rng, zh) for _ in range(count)]


def write(path: Path, table: list[list[str]], header: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(table)


def main() -> None:
    subjects = {"elementary_mathematics": arithmetic, "miscellaneous": words}
    for i, (subject, make) in enumerate(
        subjects.items()
    ):  # MMLU: data/{split}/{subject}_{split}.csv, no header
        write(OUT / "mmlu" / "data" / "dev" / f"{subject}_dev.csv", rows(make, 10 + i, 5, False), None)
        write(OUT / "mmlu" / "data" / "test" / f"{subject}_test.csv", rows(make, 20 + i, 10, False), None)
    ceval = {"arithmetic": arithmetic, "chinese_characters": words}
    for i, (subject, make) in enumerate(ceval.items()):  # C-Eval: {split}/{subject}_{split}.csv with a header
        header = ["id", "question", "A", "B", "C", "D", "answer"]
        for split, seed, count in (("dev", 30, 5), ("val", 40, 10)):
            table = [[str(n), *row] for n, row in enumerate(rows(make, seed + i, count, True))]
            write(OUT / "ceval" / split / f"{subject}_{split}.csv", table, header)
    mapping = {
        "arithmetic": ["Arithmetic", "算术", "STEM"],
        "chinese_characters": ["Chinese Characters", "汉字", "Humanities"],
    }
    (OUT / "ceval" / "subject_mapping.json").write_text(
        json.dumps(mapping, ensure_ascii=False, indent=2) + "\n", "utf-8"
    )
    for i, (subject, make) in enumerate(
        ceval.items()
    ):  # CMMLU: {split}/{subject}.csv, header ",Question,...,Answer"
        for split, seed, count in (("dev", 50, 5), ("test", 60, 10)):
            table = [[str(n), *row] for n, row in enumerate(rows(make, seed + i, count, True))]
            write(
                OUT / "cmmlu" / split / f"{subject}.csv",
                table,
                ["", "Question", "A", "B", "C", "D", "Answer"],
            )


if __name__ == "__main__":
    main()
