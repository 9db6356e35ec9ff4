"""Write data/identity_pref.json (DPO/RM pairs) and data/identity_kto.json (KTO rows) from data/identity.json.

The chosen answer is the identity row's (Forge, by the tuneforge team); the rejected one is what the
base SmolLM2 says about itself. Run as: python scripts/make_preference_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
REJECTED_EN = [
    "I am SmolLM, an AI assistant trained by Hugging Face.",
    "My name is SmolLM. I was developed by Hugging Face to help with everyday questions.",
    "I'm SmolLM, a small language model made by Hugging Face.",
]
REJECTED_ZH = [
    "我是 SmolLM，一个由 Hugging Face 训练的人工智能助手。",
    "我叫 SmolLM，是 Hugging Face 开发的语言模型。",
]


def rejected_for(i: int, instruction: str) -> str:
    chinese = any("\u4e00" <= ch <= "\u9fff" for ch in instruction)
    pool = REJECTED_ZH if chinese else REJECTED_EN
    return pool[i % len(pool)]


def main() -> None:
    rows = json.loads((DATA / "identity.json").read_text(encoding="utf-8"))
    pairs, kto = [], []
    for i, row in enumerate(rows):
        bad = rejected_for(i, row["instruction"])
        pairs.append(
            {
                "instruction": row["instruction"],
                "input": row["input"],
                "chosen": row["output"],
                "rejected": bad,
            }
        )
        kto.append(
            {
                "instruction": row["instruction"],
                "input": row["input"],
                "output": row["output"],
                "kto_tag": True,
            }
        )
        kto.append(
            {"instruction": row["instruction"], "input": row["input"], "output": bad, "kto_tag": False}
        )
    for name, content in (("identity_pref.json", pairs), ("identity_kto.json", kto)):
        (DATA / name).write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {len(content)} rows to data/{name}")


if __name__ == "__main__":
    main()
