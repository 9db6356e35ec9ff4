"""Multiple-choice benchmarks read from the layouts their authors publish, every row checked.

- MMLU: `data/{dev,val,test}/{subject}_{split}.csv`, no header: question, A, B, C, D, answer.
- C-Eval: `{dev,val,test}/{subject}_{split}.csv`, header `id,question,A,B,C,D,answer[,explanation]`; its
  `subject_mapping.json` (subject -> [English name, Chinese name, category]) names and groups subjects.
- CMMLU: `{dev,test}/{subject}.csv`, header `,Question,A,B,C,D,Answer`; its authors' subject table
  (`cmmlu_subjects.yaml`) gives Chinese names, categories and the China-specific group.

`task_dir` may be that folder itself or hold it under the benchmark's name (`evaluation/mmlu/...`, as
LLaMA-Factory lays it out), or be (or hold) the archive the authors publish (`data.tar`, `ceval-exam.zip`,
`cmmlu_v1_0_1.zip`), which is unpacked once into tuneforge's cache. Your own sets use any of these
layouts with any subject names.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tuneforge.utils.errors import UserError
from tuneforge.utils.paths import tuneforge_home

CHOICES = ("A", "B", "C", "D")
SPLITS = {"test": "test", "validation": "val", "val": "val", "dev": "dev"}
BENCHMARKS = ("mmlu", "ceval", "cmmlu")
CATEGORIES = ("STEM", "Social Sciences", "Humanities", "Other")
CHINA_SPECIFIC = "China specific"  # CMMLU's fifth group: subjects counted there besides their category


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str
    source: str  # file:line


@dataclass
class Benchmark:
    name: str
    split: str
    questions: dict[str, list[Question]]  # subject -> questions of the split
    shots: dict[str, list[Question]]  # subject -> the dev split's solved examples
    names: dict[str, str] = field(default_factory=dict)  # subject -> name shown in the instruction
    categories: dict[str, str] = field(default_factory=dict)  # subject -> one of CATEGORIES
    also: dict[str, list[str]] = field(default_factory=dict)  # subject -> further groups it counts in


def parse_task(task: str | None) -> tuple[str, str]:
    """`mmlu_test` -> ("mmlu", "test"); the benchmark names and splits are checked."""
    if not task:
        raise UserError("key 'task': name the benchmark and split to evaluate, e.g. task: mmlu_test")
    name, _, split = task.rpartition("_")
    if name not in BENCHMARKS or split not in SPLITS:
        raise UserError(
            f"key 'task': '{task}' is not a benchmark_split tuneforge knows; use one of "
            f"{', '.join(f'{b}_{s}' for b in BENCHMARKS for s in ('test', 'validation'))}"
        )
    return name, SPLITS[split]


ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVES)


def unpack(archive: Path) -> Path:
    """The archive's contents in tuneforge's cache (unpacked once per archive content; members that would
    land outside the folder are refused)."""
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    target = tuneforge_home() / "benchmarks" / f"{archive.name}-{digest.hexdigest()[:16]}"
    if (target / ".complete").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if Path(member).is_absolute() or ".." in Path(member).parts:
                        raise UserError(f"{archive}: member {member!r} would be written outside the folder")
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")  # no links out, no absolute paths, no devices
    except (zipfile.BadZipFile, tarfile.TarError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{archive}: not a readable archive ({err})") from None
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _layout(folder: Path, name: str) -> Path | None:
    """Where under `folder` the benchmark's split folders are, looking where publishers put them."""
    for candidate in (folder / name, folder / name / "data", folder / "data", folder):
        if any((candidate / split).is_dir() for split in ("dev", "val", "test")):
            return candidate
    inner = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    if len(inner) == 1 and inner[0].name != name:  # an archive holding one top folder (`ceval-exam/`)
        return _layout(inner[0], name)
    return None


def _root(task_dir: Path, name: str) -> Path:
    if _is_archive(task_dir):
        found = _layout(unpack(task_dir), name)
        if found is None:
            raise UserError(
                f"task_dir {task_dir}: the archive has no dev/ and test/ (or val/) folders of CSV files for {name}"
            )
        return found
    found = _layout(task_dir, name)
    if found is not None:
        return found
    for folder in (task_dir / name, task_dir):
        archives = sorted(p for p in folder.iterdir() if _is_archive(p)) if folder.is_dir() else []
        named = [p for p in archives if name in p.name.lower()] or archives
        if len(named) == 1:
            return _root(named[0], name)
    raise UserError(
        f"task_dir {task_dir} has no {name} data in a known layout: expected dev/ and test/ (or val/) folders of "
        f"CSV files there, under {task_dir / name}, or under data/, or the benchmark's published archive "
        "(see `tuneforge eval --help`)"
    )


def _files(folder: Path, name: str, split: str) -> dict[str, Path]:
    """subject -> its CSV file of `split` in `folder` (`{subject}_{split}.csv`, or `{subject}.csv` for CMMLU)."""
    files = sorted((folder / split).glob("*.csv")) if (folder / split).is_dir() else []
    suffix = f"_{split}"
    out = {}
    for path in files:
        stem = path.stem
        subject = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        out[subject] = path
    return out


def _read(path: Path, subject: str, header: bool) -> list[Question]:
    questions = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        columns = None
        for row in reader:
            line = reader.line_num
            if header and columns is None:
                columns = [c.strip().lower() for c in row]
                continue
            if not row or not any(cell.strip() for cell in row):
                continue
            if columns is not None:
                cells = dict(zip(columns, row, strict=False))
                values = [
                    cells.get("question"),
                    *(cells.get(c.lower()) for c in CHOICES),
                    cells.get("answer"),
                ]
            else:
                values = row[:6] + [None] * (6 - len(row[:6]))
            question, *choices, answer = values
            if question is None or any(c is None for c in choices):
                raise UserError(
                    f"{path}:{line}: a question needs four choices A-D; this row has fewer columns"
                )
            answer = (answer or "").strip().upper()
            if answer not in CHOICES:
                raise UserError(f"{path}:{line}: the answer is {answer or 'empty'!r}, not one of A, B, C, D")
            questions.append(Question(subject, question, tuple(choices), answer, f"{path}:{line}"))
    return questions


@functools.cache
def _mmlu_categories() -> dict[str, str]:
    table = yaml.safe_load((Path(__file__).with_name("mmlu_categories.yaml")).read_text(encoding="utf-8"))
    return {subject: category for category, subjects in table.items() for subject in subjects}


@functools.cache
def _cmmlu_subjects() -> dict[str, dict]:
    return yaml.safe_load((Path(__file__).with_name("cmmlu_subjects.yaml")).read_text(encoding="utf-8"))


def _cmmlu_mapping(lang: str) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """CMMLU's subject table: names (Chinese ones for lang zh), categories, and the China-specific subjects."""
    table = _cmmlu_subjects()
    names = {s: v["name"] for s, v in table.items()} if lang == "zh" else {}
    also = {s: [CHINA_SPECIFIC] for s, v in table.items() if v.get("china_specific")}
    return names, {s: v["category"] for s, v in table.items()}, also


def _ceval_mapping(root: Path, lang: str, task_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """C-Eval's subject_mapping.json (next to the splits, or in task_dir beside the archive):
    (subject -> name in the instruction's language, subject -> category)."""
    folder = task_dir if task_dir.is_dir() else task_dir.parent
    places = (root, root.parent, folder, folder / "ceval")
    for path in (place / "subject_mapping.json" for place in places):
        if path.is_file():
            mapping = json.loads(path.read_text(encoding="utf-8"))
            categories = {
                "STEM": "STEM", "Social Science": "Social Sciences", "Humanities": "Humanities", "Other": "Other"
            }  # fmt: skip
            return (
                {s: v[0] if lang == "en" else v[1] for s, v in mapping.items()},
                {s: categories.get(v[2], "Other") for s, v in mapping.items()},
            )
    return {}, {}


def local_task_dir(task_dir: str | Path) -> Path:
    """`task_dir` itself, or for a hub dataset id (`llamafactory/mmlu`) that is not a local path, the
    repository's CSV, JSON and archive files downloaded into the hub's cache."""
    from tuneforge.data.conversation import DataError
    from tuneforge.data.hub import dataset_snapshot
    from tuneforge.model.hub import looks_like_repo_id

    path = Path(task_dir)
    if path.exists() or not looks_like_repo_id(str(task_dir)):
        return path
    patterns = ["*.csv", "*.json", *(f"*{suffix}" for suffix in ARCHIVES)]
    try:
        return Path(dataset_snapshot(str(task_dir), patterns, "task_dir"))
    except DataError as err:
        raise UserError(str(err)) from None


def load_benchmark(task: str, task_dir: str | Path, lang: str = "en") -> Benchmark:
    """Every question of the task's split and the dev examples, or a sentence naming the file and line."""
    name, split = parse_task(task)
    task_dir = local_task_dir(task_dir)
    root = _root(task_dir, name)
    if name == "cmmlu" and split == "val":
        raise UserError("CMMLU publishes dev and test splits only; use task: cmmlu_test")
    header = name in ("ceval", "cmmlu")
    files = _files(root, name, split)
    if not files:
        raise UserError(f"{root / split} holds no CSV files for {task}")
    dev = _files(root, name, "dev")
    benchmark = Benchmark(name, split, {}, {})
    for subject, path in files.items():
        questions = _read(path, subject, header)
        if not questions:
            raise UserError(f"{path} has no questions")
        benchmark.questions[subject] = questions
        benchmark.shots[subject] = _read(dev[subject], subject, header) if subject in dev else []
    names, categories, also = {}, {}, {}
    if name == "ceval":
        names, categories = _ceval_mapping(root, lang, Path(task_dir))
    elif name == "cmmlu":
        names, categories, also = _cmmlu_mapping(lang)
    mmlu = _mmlu_categories()
    for subject in benchmark.questions:
        benchmark.names[subject] = names.get(subject) or subject.replace("_", " ")
        benchmark.categories[subject] = categories.get(subject) or mmlu.get(subject, "Other")
        benchmark.also[subject] = also.get(subject, [])
    return benchmark
