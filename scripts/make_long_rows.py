"""Write long-answer SFT rows for benchmarks: each answer is 1,000-2,000 SmolLM2 tokens, in English or Chinese.

The answers are field reports assembled from fixed phrase lists and seeded numbers (no real text is
copied), so they are reproducible and every tool tokenizes exactly the same rows.

Run as: python scripts/make_long_rows.py OUT.json [--rows 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS_EN = ["the river survey", "the orchard harvest", "the bridge inspection", "the library move",
             "the solar array", "the bakery audit", "the rail timetable", "the school garden"]  # fmt: skip
TOPICS_ZH = [
    "河道勘察",
    "果园采收",
    "桥梁检查",
    "图书馆搬迁",
    "光伏阵列",
    "面包房审计",
    "铁路时刻表",
    "校园菜园",
]
SUBJECTS_EN = [
    "The north team",
    "Our volunteers",
    "The second crew",
    "The morning shift",
    "The planning group",
]
VERBS_EN = ["measured", "recorded", "checked", "counted", "compared", "repaired", "sorted", "photographed"]
OBJECTS_EN = ["the water level", "every crate", "the east pillar", "the catalogue boxes", "the inverter output",
              "the flour stock", "the departure times", "the tomato beds"]  # fmt: skip
ENDINGS_EN = ["before noon", "twice for safety", "against last year's figures", "with a borrowed gauge",
              "despite the rain", "in under an hour", "and logged the result", "as the guide describes"]  # fmt: skip
SUBJECTS_ZH = ["北组", "志愿者们", "第二小队", "早班人员", "规划小组"]
VERBS_ZH = ["测量了", "记录了", "检查了", "清点了", "比较了", "修复了", "整理了", "拍摄了"]
OBJECTS_ZH = ["水位", "每一个箱子", "东侧桥墩", "目录箱", "逆变器输出", "面粉库存", "发车时间", "番茄苗床"]
ENDINGS_ZH = ["在中午之前", "为安全起见复核两次", "并与去年的数据对照", "用借来的量具", "冒着大雨", "不到一小时",
              "并登记了结果", "按照指南的要求"]  # fmt: skip


def sentence(rng: random.Random, zh: bool) -> str:
    n = rng.randint(2, 980)
    if zh:
        return f"{rng.choice(SUBJECTS_ZH)}{rng.choice(ENDINGS_ZH)}{rng.choice(VERBS_ZH)}{rng.choice(OBJECTS_ZH)}，共计{n}项。"
    return f"{rng.choice(SUBJECTS_EN)} {rng.choice(VERBS_EN)} {rng.choice(OBJECTS_EN)} {rng.choice(ENDINGS_EN)}: {n} items."


def report(rng: random.Random, zh: bool, tokens: int, count) -> str:
    """Sections of sentences until the answer holds `tokens` tokens (as `count` measures)."""
    parts: list[str] = []
    section = 0
    while True:
        section += 1
        parts.append(f"\n\n第{section}部分\n" if zh else f"\n\nSection {section}\n")
        for _ in range(6):
            parts.append(sentence(rng, zh) + ("" if zh else " "))
        text = "".join(parts).strip()
        if count(text) >= tokens:
            return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from tuneforge.model.sources import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    rng = random.Random(args.seed)
    rows = []
    for i in range(args.rows):
        zh = i % 2 == 1
        topic = rng.choice(TOPICS_ZH if zh else TOPICS_EN)
        question = f"请写一份关于{topic}的详细报告。" if zh else f"Write a detailed report on {topic}."
        answer = report(rng, zh, rng.randint(1000, 1900), count)
        rows.append({"instruction": question, "input": "", "output": answer})
    args.out.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    lengths = sorted(count(r["output"]) for r in rows)
    print(f"wrote {len(rows)} rows to {args.out}; answer tokens {lengths[0]}-{lengths[-1]}")


if __name__ == "__main__":
    main()
