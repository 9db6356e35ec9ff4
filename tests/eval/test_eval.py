"""`tuneforge eval` on small fixtures in MMLU's, C-Eval's and CMMLU's layouts: accuracies equal an independent
computation with transformers, categories add up, base and adapters side by side, bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.export.test_export import random_adapter
from tuneforge.cli.main import main
from tuneforge.config import load_config
from tuneforge.eval import run_eval, summarize
from tuneforge.eval.benchmarks import CATEGORIES, load_benchmark
from tuneforge.utils.errors import UserError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


def independent_predictions(
    model_dir: Path, adapter: Path | None, task: str, task_dir: Path, lang: str, shots: int
) -> dict[str, list[str]]:
    """The same prompts built without tuneforge's code: the instruction, the dev examples as chat turns,
    the tokenizer's own chat template, the letter with the largest next-token logit."""
    import csv

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    letters = [tokenizer.encode(x, add_special_tokens=False)[-1] for x in "ABCD"]
    head, tail = (
        ("The following are multiple choice questions (with answers) about {}.\n\n", "\nAnswer:")
        if lang == "en"
        else ("以下是中国关于{}考试的单项选择题，请选出其中的正确答案。\n\n", "\n答案：")
    )
    bench = load_benchmark(task, task_dir, lang)
    out = {}
    for subject in bench.questions:

        def rows(split: str, subject: str = subject) -> list[list[str]]:
            folder = {
                "mmlu": task_dir / "mmlu" / "data",
                "ceval": task_dir / "ceval",
                "cmmlu": task_dir / "cmmlu",
            }[bench.name]
            name = f"{subject}.csv" if bench.name == "cmmlu" else f"{subject}_{split}.csv"
            with (folder / split / name).open(encoding="utf-8") as fh:
                table = list(csv.reader(fh))
            return [
                r[1:7] if bench.name != "mmlu" else r[:6]
                for r in (table[1:] if bench.name != "mmlu" else table)
            ]

        def text(row: list[str]) -> str:
            return row[0] + "".join(f"\n{c}. {row[1 + i]}" for i, c in enumerate("ABCD")) + tail

        predicted = []
        for row in rows(bench.split):
            chat = []
            for shot in rows("dev")[:shots]:
                chat += [{"role": "user", "content": text(shot)}, {"role": "assistant", "content": shot[5]}]
            chat.append({"role": "user", "content": text(row)})
            chat[0]["content"] = head.format(bench.names[subject]) + chat[0]["content"]
            ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
            ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
            with torch.no_grad():
                logits = model(ids).logits[0, -1, letters]
            predicted.append("ABCD"[int(logits.argmax())])
        out[subject] = predicted
    return out


@pytest.mark.parametrize(
    ("task", "lang"), [("mmlu_test", "en"), ("ceval_validation", "zh"), ("cmmlu_test", "zh")]
)
def test_accuracy_equals_an_independent_computation_and_categories_add_up(
    task, lang, tiny_model_dir, tmp_path
):
    cfg = load_config(
        extra={
            "model_name_or_path": str(tiny_model_dir),
            "task": task,
            "task_dir": str(FIXTURES),
            "lang": lang,
            "n_shot": 2,
            "save_dir": str(tmp_path / "results"),
            "batch_size": 3,
        }
    )
    report = run_eval(cfg)
    result = report["results"]["model"]
    expected = independent_predictions(tiny_model_dir, None, task, FIXTURES, lang, 2)
    predictions = [
        json.loads(line) for line in (tmp_path / "results" / "predictions.jsonl").read_text().splitlines()
    ]
    for subject, letters in expected.items():
        got = [p["predicted"] for p in predictions if p["subject"] == subject]
        assert got == letters, subject
        answers = [p["answer"] for p in predictions if p["subject"] == subject]
        accuracy = sum(a == b for a, b in zip(got, answers, strict=True)) / len(answers)
        assert result["subjects"][subject]["accuracy"] == pytest.approx(accuracy)
        assert result["subjects"][subject]["n"] == 10
    categories = result["categories"]
    main_rows = [c for name, c in categories.items() if name in CATEGORIES]
    assert sum(c["n"] for c in main_rows) == result["n"] == 20
    assert result["average"] == pytest.approx(sum(c["accuracy"] * c["n"] for c in main_rows) / 20)
    if task == "ceval_validation":
        assert set(categories) == {"STEM", "Humanities"}  # from the benchmark's subject_mapping.json
    if task == "mmlu_test":
        assert set(categories) == {"STEM", "Other"}
    assert json.loads((tmp_path / "results" / "results.json").read_text())["results"]["model"] == result


def test_compare_base_scores_adapters_and_base_side_by_side(tiny_model_dir, tmp_path, capsys):
    adapter = random_adapter(tiny_model_dir, tmp_path / "a", 1)
    config = tmp_path / "eval.yaml"
    config.write_text(
        json.dumps(
            {
                "model_name_or_path": str(tiny_model_dir),
                "adapter_name_or_path": str(adapter),
                "task": "mmlu_test",
                "task_dir": str(FIXTURES),
                "n_shot": 1,
                "compare_base": True,
                "save_dir": str(tmp_path / "r"),
            }
        )
    )
    config = config.rename(tmp_path / "eval.json")
    assert main(["eval", str(config)]) == 0
    table = capsys.readouterr().out
    assert "tuned" in table and "base" in table and "diff" in table and "Average" in table
    results = json.loads((tmp_path / "r" / "results.json").read_text())["results"]
    tuned = independent_predictions(tiny_model_dir, adapter, "mmlu_test", FIXTURES, "en", 1)
    base = independent_predictions(tiny_model_dir, None, "mmlu_test", FIXTURES, "en", 1)
    predictions = [json.loads(x) for x in (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()]
    for label, expected in (("tuned", tuned), ("base", base)):
        got = [p["predicted"] for p in predictions if p["model"] == label]
        assert got == [x for subject in results[label]["subjects"] for x in expected[subject]]


def write_csv(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_bad_benchmarks_are_named_by_file_and_line(tmp_path, tiny_model_dir, capsys):
    task_dir = tmp_path / "bench"
    write_csv(task_dir / "data" / "dev" / "s_dev.csv", "q,a,b,c,d,A\n")
    write_csv(task_dir / "data" / "test" / "s_test.csv", "q1,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(UserError, match=r"s_test.csv:2: the answer is 'E', not one of A, B, C, D"):
        load_benchmark("mmlu_test", task_dir)
    write_csv(task_dir / "data" / "test" / "s_test.csv", "q1,a,b,c,d,A\nq2,a,b\n")
    with pytest.raises(UserError, match=r"s_test.csv:2: a question needs four choices"):
        load_benchmark("mmlu_test", task_dir)
    with pytest.raises(UserError, match="no mmlu data in a known layout"):
        load_benchmark("mmlu_test", tmp_path / "empty")
    with pytest.raises(UserError, match="not a benchmark_split tuneforge knows"):
        load_benchmark("gsm8k_test", task_dir)
    config = tmp_path / "bad.json"
    config.write_text(
        json.dumps(
            {"model_name_or_path": str(tiny_model_dir), "task": "mmlu_test", "task_dir": str(task_dir)}
        )
    )
    assert main(["eval", str(config)]) == 2 and "four choices" in capsys.readouterr().err


def published_archives(tmp_path: Path) -> dict[str, Path]:
    """The fixtures packed as their authors publish them: MMLU's data.tar (a data/ folder), C-Eval's
    ceval-exam.zip (the split folders at the top; subject_mapping.json lives beside it), CMMLU's zip (one folder)."""
    import tarfile
    import zipfile

    out = tmp_path / "archives"
    (out / "ceval").mkdir(parents=True)
    with tarfile.open(out / "data.tar", "w") as tf:
        tf.add(FIXTURES / "mmlu" / "data", arcname="data")
    with zipfile.ZipFile(out / "ceval" / "ceval-exam.zip", "w") as zf:
        for path in sorted((FIXTURES / "ceval").rglob("*.csv")):
            zf.write(path, path.relative_to(FIXTURES / "ceval").as_posix())
    (out / "ceval" / "subject_mapping.json").write_bytes(
        (FIXTURES / "ceval" / "subject_mapping.json").read_bytes()
    )
    with zipfile.ZipFile(out / "cmmlu_v1_0_1.zip", "w") as zf:
        for path in sorted((FIXTURES / "cmmlu").rglob("*.csv")):
            zf.write(path, "cmmlu_v1_0_1/" + path.relative_to(FIXTURES / "cmmlu").as_posix())
    return {"mmlu": out / "data.tar", "ceval": out / "ceval", "cmmlu": out}


@pytest.mark.parametrize("task", ["mmlu_test", "ceval_validation", "cmmlu_test"])
def test_published_archives_read_like_their_folders(task, tmp_path):
    archive = published_archives(tmp_path)[task.split("_")[0]]
    unpacked = load_benchmark(task, archive, "zh")
    folder = load_benchmark(task, FIXTURES, "zh")
    strip = lambda b: {s: [(q.question, q.choices, q.answer) for q in qs] for s, qs in b.questions.items()}  # noqa: E731
    assert strip(unpacked) == strip(folder) and unpacked.shots.keys() == folder.shots.keys()
    assert unpacked.names == folder.names and unpacked.categories == folder.categories
    again = load_benchmark(task, archive, "zh")  # unpacked once, then read from the cache
    assert (
        again.questions[next(iter(again.questions))][0].source
        == unpacked.questions[next(iter(unpacked.questions))][0].source
    )


def test_archives_that_escape_or_do_not_open_are_refused(tmp_path):
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside/test/x.csv", "q,a,b,c,d,A\n")
    with pytest.raises(UserError, match="outside the folder"):
        load_benchmark("mmlu_test", evil)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable archive"):
        load_benchmark("mmlu_test", broken)
    assert not (tmp_path.parent / "outside").exists()


def test_cmmlu_subjects_get_their_chinese_names_and_the_authors_categories(tmp_path):
    task_dir = tmp_path / "cmmlu"
    for split in ("dev", "test"):
        for ours, theirs in (
            ("chinese_characters", "elementary_chinese"),
            ("arithmetic", "elementary_mathematics"),
        ):
            write_csv(
                task_dir / split / f"{theirs}.csv",
                (FIXTURES / "cmmlu" / split / f"{ours}.csv").read_text("utf-8"),
            )
    bench = load_benchmark("cmmlu_test", task_dir, "zh")
    assert bench.names == {"elementary_chinese": "小学语文", "elementary_mathematics": "初等数学"}
    assert bench.categories == {"elementary_chinese": "Social Sciences", "elementary_mathematics": "STEM"}
    assert load_benchmark("cmmlu_test", task_dir, "en").names["elementary_chinese"] == "elementary chinese"
    subjects = {
        s: {"n": 10, "correct": c, "category": bench.categories[s], "also": bench.also[s]}
        for s, c in (("elementary_chinese", 4), ("elementary_mathematics", 7))
    }
    rows = summarize(subjects)["categories"]
    assert rows["China specific"] == {"accuracy": 0.4, "n": 10}  # counted besides its category
    assert rows["Social Sciences"] == {"accuracy": 0.4, "n": 10} and rows["STEM"] == {
        "accuracy": 0.7,
        "n": 10,
    }


LOAD = (
    "import sys; from tuneforge.eval.benchmarks import load_benchmark;"
    "b = load_benchmark('mmlu_test', sys.argv[1]); print(sum(len(q) for q in b.questions.values()))"
)


def test_a_hub_dataset_id_as_task_dir_downloads_the_published_archive_then_works_offline(tmp_path):
    """LLaMA-Factory's evaluation datasets (`llamafactory/mmlu`) hold the benchmark's zip: task_dir can name
    the repository; the real huggingface_hub client fetches it from a local server that speaks the Hub's
    protocol, and a second run reads the cache offline."""
    import os
    import subprocess
    import sys
    import zipfile

    from tests.model.hub_server import serve

    repo = tmp_path / "repo"
    repo.mkdir()
    with zipfile.ZipFile(repo / "mmlu.zip", "w") as zf:
        for path in sorted((FIXTURES / "mmlu").rglob("*.csv")):
            zf.write(path, "mmlu/" + path.relative_to(FIXTURES / "mmlu").as_posix())
    (repo / "mmlu.py").write_text("# a loading script: never downloaded, never run\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "TUNEFORGE_HOME": str(tmp_path / "tf")}
    root = Path(__file__).resolve().parents[2]

    def load(extra: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", LOAD, "acme/mmlu"],
            capture_output=True,
            text=True,
            cwd=root,
            env={**env, **extra},
        )

    server, hub, url = serve(repo, "acme/mmlu", kind="dataset")
    try:
        online = load({"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0"})
    finally:
        server.shutdown()
    assert online.returncode == 0 and online.stdout.split()[-1] == "20", online.stderr[-2000:]
    assert any("mmlu.zip" in line for line in hub.log)
    assert not any("mmlu.py" in line for line in hub.log)  # only data files are fetched
    offline = load({"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout.split()[-1] == "20", offline.stderr[-2000:]
    missing = load({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty")})
    assert missing.returncode != 0 and "offline mode is on" in missing.stderr
