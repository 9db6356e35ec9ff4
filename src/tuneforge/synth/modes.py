"""The three things `tuneforge synth` can make, each as jobs (requests to send), a call (sent in a worker
thread) and a handler (run in the main thread, one result at a time, so the files have one writer).

- instruct: Alpaca's self-instruct loop. Each request shows `synth_prompt_examples` seed tasks of one
  language and asks for `synth_tasks_per_request` new ones; a task is kept when it parses, is not cut off,
  has `synth_min_words`..`synth_max_words` words, names no blocked word and its ROUGE-L F1 with every seed
  and kept instruction stays below `synth_rouge_threshold`.
- answer: the teacher answers each instruction of `synth_source_file` (distillation).
- preference: two answers per instruction and the teacher's verdict on which is better (shown in a random
  order, so a teacher that prefers the first answer does not decide the pairs).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.synth.filters import Similarity, blocked_word, words
from tuneforge.synth.store import AppendLog
from tuneforge.synth.tasks import (
    answer_prompt,
    instruct_prompt,
    is_chinese,
    judge_prompt,
    parse_judgement,
    parse_tasks,
)
from tuneforge.synth.teacher import Reply, Teacher
from tuneforge.utils.errors import UserError

SEED_TASKS = Path(__file__).resolve().parent / "seed_tasks.json"


@dataclass
class Verdict:
    """What became of one candidate row: kept (`reason` None) or rejected, with its row and ROUGE-L score."""

    reason: str | None
    row: dict[str, str] | None = None
    rouge_l: float | None = None


def read_alpaca(path: Path, key: str, need_output: bool) -> list[dict[str, str]]:
    """Rows of an alpaca file (json or jsonl) as {"instruction", "input"[, "output"]}; every bad row named at
    once by file:line."""
    from tuneforge.data.readers import iter_rows

    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist; give an alpaca-format .json or .jsonl file")
    rows, problems = [], []
    for raw in iter_rows(path):
        value = raw.value
        if raw.error is not None:
            problems.append(str(raw.error))
            continue
        if not isinstance(value, dict) or not str(value.get("instruction") or "").strip():
            problems.append(f"{raw.source}: needs a non-empty 'instruction'")
            continue
        if need_output and not str(value.get("output") or "").strip():
            problems.append(
                f"{raw.source}: needs a non-empty 'output' (seed tasks show the teacher an answer)"
            )
            continue
        row = {
            "instruction": str(value["instruction"]).strip(),
            "input": str(value.get("input") or "").strip(),
        }
        if need_output:
            row["output"] = str(value["output"]).strip()
        rows.append(row)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UserError(f"{key}: {len(problems)} unusable rows in {path}:\n  {shown}{more}")
    if not rows:
        raise UserError(f"{key}: {path} holds no rows")
    return rows


class Mode:
    """Jobs to send, how to send one, and what to keep of its reply."""

    row_columns: tuple[str, ...] = ("instruction", "input", "output")

    def __init__(self, args: Any, teacher: Teacher, rows: AppendLog, rng: random.Random):
        self.args, self.teacher, self.rows, self.rng = args, teacher, rows, rng

    def target(self) -> int:
        """Rows the file holds when the job is done."""
        return self.args.synth_num_rows

    def jobs(self) -> Iterator[Any]:
        raise NotImplementedError

    def call(self, job: Any) -> Any:
        raise NotImplementedError

    def judge(self, job: Any, result: Any) -> list[Verdict]:
        raise NotImplementedError

    def enough(self) -> bool:
        return len(self.rows.rows) >= self.target()


class Instruct(Mode):
    def __init__(self, args: Any, teacher: Teacher, rows: AppendLog, rng: random.Random):
        super().__init__(args, teacher, rows, rng)
        path = Path(args.synth_seed_file) if args.synth_seed_file else SEED_TASKS
        self.seeds = read_alpaca(path, "synth_seed_file", need_output=True)
        self.by_language = {
            zh: [s for s in self.seeds if is_chinese(s["instruction"]) == zh] for zh in (False, True)
        }
        self.similar = Similarity(
            [s["instruction"] for s in self.seeds] + [r["instruction"] for r in rows.rows]
        )

    def jobs(self) -> Iterator[str]:
        while True:  # one language per request, in proportion to the seeds of each
            first = self.rng.choice(self.seeds)
            pool = self.by_language[is_chinese(first["instruction"])]
            others = [s for s in pool if s is not first]
            shown = [first] + self.rng.sample(others, min(len(others), self.args.synth_prompt_examples - 1))
            yield instruct_prompt(shown, self.args.synth_tasks_per_request)

    def call(self, job: str) -> Reply:
        return self.teacher.ask(job)

    def judge(self, job: str, result: Reply) -> list[Verdict]:
        parsed = parse_tasks(result.text)
        reply = {"reply": result.text[:2000]}  # the teacher's own words, for whoever reads synth_log.jsonl
        verdicts = [Verdict("malformed", reply) for _ in range(parsed.malformed)]
        for i, task in enumerate(parsed.tasks):
            if result.truncated and i == len(parsed.tasks) - 1:  # cut off at synth_max_tokens
                verdicts.append(Verdict("truncated", task))
                continue
            verdicts.append(self.check(task))
        return verdicts

    def check(self, task: dict[str, str]) -> Verdict:
        a = self.args
        count = len(words(task["instruction"]))
        if count < a.synth_min_words:
            return Verdict("too_short", task)
        if count > a.synth_max_words:
            return Verdict("too_long", task)
        if blocked_word(task["instruction"], a.synth_blocked_words):
            return Verdict("blocked_word", task)
        score = round(self.similar.best(task["instruction"]), 4)
        if score >= a.synth_rouge_threshold:
            return Verdict("duplicate", task, score)
        self.similar.add(task["instruction"])  # later candidates of the same reply are compared with it too
        return Verdict(None, task, score)


class Answer(Mode):
    def __init__(self, args: Any, teacher: Teacher, rows: AppendLog, rng: random.Random):
        super().__init__(args, teacher, rows, rng)
        if not args.synth_source_file:
            raise UserError(
                f"synth_mode: {args.synth_mode} needs synth_source_file: the instructions to answer"
            )
        source = read_alpaca(Path(args.synth_source_file), "synth_source_file", need_output=False)
        unique = {_key(r): r for r in reversed(source[: args.synth_num_rows])}  # the same instruction once
        self.source = [r for r in source[: args.synth_num_rows] if unique.get(_key(r)) is r]

    def target(self) -> int:
        return len(self.source)

    def enough(
        self,
    ) -> bool:  # done when every instruction was asked (rows of an earlier source do not count)
        return False

    def jobs(self) -> Iterator[Any]:
        done = {_key(r) for r in self.rows.rows}
        for row in self.source:
            if _key(row) not in done:
                yield row

    def call(self, job: dict[str, str]) -> Reply:
        return self.teacher.ask(answer_prompt(job))

    def judge(self, job: dict[str, str], result: Reply) -> list[Verdict]:
        reason = _unusable(result)
        row = {**job, "output": result.text.strip()}
        return [Verdict(reason, row)]


class Preference(Answer):
    row_columns = ("instruction", "input", "chosen", "rejected")

    def jobs(self) -> Iterator[Any]:
        for row in super().jobs():
            yield row, self.rng.random() < 0.5  # show the two answers swapped?

    def call(self, job: tuple[dict[str, str], bool]) -> tuple[Reply, Reply, Reply | None]:
        row, swap = job
        first, second = self.teacher.ask(answer_prompt(row)), self.teacher.ask(answer_prompt(row))
        if _unusable(first) or _unusable(second) or first.text.strip() == second.text.strip():
            return first, second, None
        shown = (second, first) if swap else (first, second)
        return (
            first,
            second,
            self.teacher.ask(judge_prompt(row, shown[0].text.strip(), shown[1].text.strip())),
        )

    def judge(
        self, job: tuple[dict[str, str], bool], result: tuple[Reply, Reply, Reply | None]
    ) -> list[Verdict]:
        (row, swap), (first, second, verdict) = job, result
        reason = _unusable(first) or _unusable(second)
        if reason:
            return [Verdict(reason, row)]
        if verdict is None:
            return [Verdict("identical_answers", row)]
        picked = parse_judgement(verdict.text)
        if picked is None:
            return [Verdict("bad_judgement", {**row, "judgement": verdict.text.strip()[:200]})]
        better_is_first = (picked == 0) != swap
        chosen, rejected = (first, second) if better_is_first else (second, first)
        return [Verdict(None, {**row, "chosen": chosen.text.strip(), "rejected": rejected.text.strip()})]


def _key(row: dict[str, Any]) -> str:
    return f"{row['instruction']}\n\x00{row.get('input', '')}"


def _unusable(reply: Reply) -> str | None:
    if reply.truncated:
        return "truncated"
    if not reply.text.strip():
        return "empty"
    return None


MODES: dict[str, type[Mode]] = {"instruct": Instruct, "answer": Answer, "preference": Preference}
