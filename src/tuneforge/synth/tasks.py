"""What tuneforge asks the teacher, and how its answers are read back.

instruct (self-instruct): a request shows a few seed tasks, numbered, each as `Instruction:` / `Input:` /
`Output:` lines between `###` separators, and asks for more in the same form (in Chinese, with Chinese
labels, when the examples are Chinese). `parse_tasks` reads every task it can find and says which blocks it
could not read. answer: the instruction (and its input) is the whole prompt. preference: two answers, then a
judge prompt that asks for one letter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
NO_INPUT = {"", "<none>", "<noinput>", "none", "n/a", "na", "-", "无", "无输入", "（无）", "(无)", "<无>"}
_LABEL = re.compile(
    r"^[ \t]*(?:\d+\s*[.、)]\s*)?[*_]*(instructions?|input|output|指令|输入|输出)[*_]*[ \t]*[:：][*_]*[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_FIELD = {
    "instruction": "instruction",
    "instructions": "instruction",
    "指令": "instruction",
    "input": "input",
    "输入": "input",
}
_NOISE = re.compile(r"^\s*(?:#{2,}|(?:#+\s*)?(?:task|任务)\s*\d+\s*[:：]?)\s*$", re.IGNORECASE | re.MULTILINE)


def is_chinese(text: str) -> bool:
    """Mostly Chinese: at least a third of its letters are CJK characters."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(bool(CJK.match(c)) for c in letters) * 3 >= len(letters)


def _task_text(number: int, task: dict[str, str], zh: bool) -> str:
    labels = ("指令", "输入", "输出") if zh else ("Instruction", "Input", "Output")
    given = task.get("input") or ("<无>" if zh else "<none>")
    head = f"任务 {number}" if zh else f"Task {number}"
    return f"{head}\n{labels[0]}: {task['instruction']}\n{labels[1]}: {given}\n{labels[2]}: {task['output']}"


def instruct_prompt(examples: list[dict[str, str]], count: int) -> str:
    """A request for `count` new tasks after `examples` (Chinese wording when the examples are Chinese)."""
    zh = is_chinese(" ".join(e["instruction"] for e in examples))
    shown = "\n###\n".join(_task_text(i, e, zh) for i, e in enumerate(examples, start=1))
    first = len(examples) + 1
    if zh:
        rules = (
            f"我们在为训练中文助手收集多样的任务。请写出 {count} 个新任务，要求：\n"
            "1. 任务类型要丰富：问答、解释、分类、抽取、改写、摘要、头脑风暴、写作、数学、编程、推理、建议等；\n"
            "2. 指令的说法要多变，可以是问句也可以是祈使句，一到两句话，不要重复相同的开头；\n"
            "3. 助手只能读写文字：不要让它看图、画图、听音频、看视频、打开文件或上网；\n"
            "4. 有的任务需要输入（一段文字、一个列表、代码或数字），请把输入完整写出来；不需要时写 <无>；\n"
            "5. 输出要正确、完整、长短合适；\n"
            "6. 全部用中文，每个任务的格式与下面的例子完全相同，任务之间用一行 ### 分隔。\n\n"
        )
        return f"{rules}{shown}\n###\n任务 {first}\n"
    rules = (
        f"We are collecting varied tasks to teach an assistant to follow instructions. Write {count} new "
        "tasks. Requirements:\n"
        "1. Vary the kind of task: questions, explanations, classification, extraction, rewriting, "
        "summaries, brainstorming, writing, maths, code, reasoning, advice.\n"
        "2. Vary the wording: questions and imperatives, one or two sentences, not the same opening twice.\n"
        "3. The assistant only reads and writes text: never ask it to see, draw or hear anything, open a file "
        "or browse the web.\n"
        "4. Some tasks need an input (a passage, a list, code, numbers): write it out in full. Otherwise "
        "write <none>.\n"
        "5. The output is a correct, complete answer of a sensible length.\n"
        "6. Use exactly the form of the examples below, with a line ### between tasks.\n\n"
    )
    return f"{rules}{shown}\n###\nTask {first}\n"


@dataclass
class Parsed:
    """The tasks read from one reply, and how many blocks looked like tasks but could not be read."""

    tasks: list[dict[str, str]]
    malformed: int


def parse_tasks(text: str) -> Parsed:
    """Tasks as {"instruction", "input", "output"}. Blocks are split at `###` lines and `Task N` headings; in a
    block a new task starts at each instruction label. Text without any label (a greeting) is ignored; a task
    without an instruction or an output is malformed, and so is a reply in which no label appears at all."""
    if not _LABEL.search(text):
        return Parsed([], 1 if text.strip() else 0)
    tasks: list[dict[str, str]] = []
    malformed = 0
    for block in _NOISE.split(text):
        marks = list(_LABEL.finditer(block))
        current: dict[str, str] | None = None
        for i, mark in enumerate(marks):
            field = _FIELD.get(mark.group(1).lower(), "output")
            value = block[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(block)].strip()
            value = value.strip("*").strip()
            if field == "instruction":
                if current is not None:
                    tasks.append(current)
                current = {"instruction": value}
            elif current is None or field in current:  # an input or output that belongs to no instruction
                malformed += 1
                current = None
            else:
                current[field] = value
        if current is not None:
            tasks.append(current)
    read = []
    for task in tasks:
        if not task.get("instruction") or not task.get("output"):
            malformed += 1
            continue
        given = task.get("input", "")
        read.append(
            {
                "instruction": task["instruction"],
                "input": "" if given.strip().lower() in NO_INPUT else given,
                "output": task["output"],
            }
        )
    return Parsed(read, malformed)


def answer_prompt(row: dict[str, Any]) -> str:
    """The instruction, and its input below it (as Alpaca's training prompt joins them)."""
    given = str(row.get("input") or "").strip()
    return f"{row['instruction']}\n\n{given}" if given else str(row["instruction"])


def judge_prompt(row: dict[str, Any], first: str, second: str) -> str:
    if is_chinese(answer_prompt(row)):
        return (
            "下面是同一条指令的两个回答。请判断哪个回答更有帮助、更正确、更完整。只回答一个字母：A 或 B。\n\n"
            f"【指令】\n{answer_prompt(row)}\n\n【回答 A】\n{first}\n\n【回答 B】\n{second}\n\n更好的回答是："
        )
    return (
        "Two assistants answered the same instruction. Decide which answer is more helpful, correct and "
        "complete. Reply with one letter only: A or B.\n\n"
        f"[Instruction]\n{answer_prompt(row)}\n\n[Answer A]\n{first}\n\n[Answer B]\n{second}\n\n"
        "The better answer is:"
    )


_VERDICT = re.compile(r"(?<![A-Za-z])([AB])(?![A-Za-z])")


def parse_judgement(text: str) -> int | None:
    """0 for A, 1 for B, None when the reply names neither first (or names both in its first line)."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    found = set(_VERDICT.findall(line.replace("回答", " ")))
    if len(found) == 1:
        return "AB".index(found.pop())
    return None
