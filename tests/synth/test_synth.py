"""`tuneforge synth` against a scripted teacher (malformed replies, 429s, 5xx, stalls, duplicates), killed and
rerun, and its output trained on; the parsing and filtering by hand."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.synth.teacher_server import Reply, Stall, Status, TeacherServer, tasks_text
from tuneforge.cli.main import main
from tuneforge.config import build_config
from tuneforge.data.loader import load_examples
from tuneforge.synth import run_synth
from tuneforge.synth.filters import Similarity, blocked_word, words
from tuneforge.synth.tasks import instruct_prompt, parse_judgement, parse_tasks

SEEDS = [
    {"instruction": "Name three rivers of Europe and the sea each flows into.", "input": "", "output": "..."},
    {"instruction": "Summarise the paragraph below in one sentence.", "input": "Bees ...", "output": "..."},
    {
        "instruction": "Convert 72 degrees Fahrenheit to Celsius and show the steps.",
        "input": "",
        "output": "...",
    },
]


def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SEEDS), encoding="utf-8")
    return path


def synth_config(server: TeacherServer, out: Path, **keys: object) -> object:
    return build_config(
        {
            "synth_base_url": server.url,
            "synth_output_dir": str(out),
            "synth_max_retries": 1,
            "synth_timeout": 1.0,
            "synth_concurrency": 1,
            **keys,
        }  # fmt: skip
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- reading replies and filtering, by hand -------------------------------------------------------------


def test_parse_tasks_reads_english_and_chinese_labels_and_counts_broken_blocks():
    text = (
        "Here you go!\n###\nTask 4\nInstruction: List two prime numbers.\nInput: <none>\nOutput: 2 and 3.\n###\n"
        "5. Instruction: Reverse the word.\n5. Input: stone\n5. Output: enots\n###\n"
        "任务 6\n指令：把下面的句子翻译成英文。\n输入：今天天气很好。\n输出：The weather is nice today.\n###\n"
        "Task 7\nInstruction: This one has no output.\nInput: <none>\n###\n"
        "Task 8\nOutput: an output without an instruction\n"
    )
    parsed = parse_tasks(text)
    assert parsed.tasks == [
        {"instruction": "List two prime numbers.", "input": "", "output": "2 and 3."},
        {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
        {
            "instruction": "把下面的句子翻译成英文。",
            "input": "今天天气很好。",
            "output": "The weather is nice today.",
        },
    ]
    assert parsed.malformed == 2
    assert parse_tasks("I cannot help with that.").malformed == 1 and parse_tasks("").malformed == 0


def test_prompts_are_in_the_examples_language_and_judgements_read():
    english = instruct_prompt([dict(s, output="x") for s in SEEDS], 5)
    assert "Write 5 new tasks" in english and english.rstrip().endswith("Task 4")
    chinese = instruct_prompt([{"instruction": "写一首关于秋天的短诗。", "input": "", "output": "……"}], 3)
    assert "请写出 3 个新任务" in chinese and "指令: 写一首关于秋天的短诗。" in chinese
    assert [parse_judgement(t) for t in ("B", "Answer A is better.", "A or B", "neither", "回答B更好")] == [
        1,
        0,
        None,
        None,
        1,
    ]


def test_rouge_l_compares_words_so_chinese_near_duplicates_are_caught():
    assert words("Write a poem, please!") == ["write", "a", "poem", "please"]
    similar = Similarity(["写一首关于秋天的短诗", "Explain how a rainbow forms."])
    assert similar.best("写一首关于秋天的诗") >= 0.7  # one word fewer: a near-duplicate
    assert similar.best("用三句话介绍长城的历史") < 0.3
    assert similar.best("explain how a RAINBOW forms") == 1.0  # the same words
    # ROUGE-L F1 by hand: "explain how rainbows form" vs "explain how a rainbow forms": LCS 2, P 2/4, R 2/5
    assert similar.best("Explain how rainbows form") == pytest.approx(
        2 * (2 / 4) * (2 / 5) / (2 / 4 + 2 / 5), abs=1e-6
    )
    assert (
        blocked_word("Draw a cat.", ["draw"]) == "draw" and blocked_word("Withdraw cash.", ["draw"]) is None
    )
    assert blocked_word("请绘制一张图", ["绘制"]) == "绘制"


# ---- the loop against a scripted teacher ----------------------------------------------------------------

GOOD = [
    ("Explain why leaves change colour in autumn.", "", "Chlorophyll breaks down ..."),
    ("Sort these numbers from smallest to largest.", "9, 2, 7", "2, 7, 9"),
    ("Suggest a name for a bakery that sells only bread.", "", "Crumb & Crust"),
]


def test_instruct_keeps_good_tasks_and_counts_every_rejection(tmp_path):
    reply_a = (
        tasks_text(
            GOOD
            + [
                (
                    "Name three rivers of Europe and the sea each flows into.",
                    "",
                    "...",
                ),  # a seed, word for word
                ("Explain why the leaves change colour in autumn.", "", "..."),  # near the first one kept
                ("Draw a map of your town.", "", "..."),  # blocked words
                ("Hi there", "", "Hello!"),  # two words
            ]
        )
        + "\n###\nTask 11\nInstruction: An instruction without an output.\n"
    )
    reply_b = tasks_text(
        [
            ("Write a haiku about a quiet harbour at dawn.", "", "Still water ..."),
            ("What is 15% of 80? Show the working.", "", "0.15 x 80 = 12"),
            ("Give two tips for learning to touch-type.", "", "Practise"),  # cut off mid-answer
        ]
    )
    reply_c = tasks_text(
        [
            ("Classify the sentiment of this review as positive or negative.", "Great value!", "positive"),
            ("Rewrite the sentence in the passive voice.", "The cat chased the mouse.", "The mouse was ..."),
        ]
    )
    script = [
        Status(500), Status(500),  # one request fails after its retry
        Status(429), Reply(reply_a),
        Status(503), Reply(reply_b, finish_reason="length"),
        Stall(3), Reply(reply_c),
    ]  # fmt: skip
    out = tmp_path / "synth"
    with TeacherServer(script) as server:
        folder = run_synth(
            synth_config(server, out, synth_seed_file=str(seed_file(tmp_path)), synth_num_rows=6)
        )
    rows = read_jsonl(folder / "synth.jsonl")
    assert (
        [r["instruction"] for r in rows]
        == [t[0] for t in GOOD]
        + [
            "Write a haiku about a quiet harbour at dawn.",
            "What is 15% of 80? Show the working.",
            "Classify the sentiment of this review as positive or negative.",
        ]
    )  # the sixth row filled the target: the second task of the last reply is surplus, neither kept nor counted
    assert rows[1] == {"instruction": GOOD[1][0], "input": "9, 2, 7", "output": "2, 7, 9"}
    assert len(server.prompts) == 8 and server.prompts[0].count("Instruction:") == 3  # 3 seeds shown
    report = json.loads((folder / "report.json").read_text())
    assert report["rows"] == 6 and report["requests_failed"] == 1
    assert report["rejected"] == {
        "blocked_word": 1,
        "duplicate": 2,
        "malformed": 1,
        "too_short": 1,
        "truncated": 1,
    }
    assert report["this_run"] == {
        "requests": 4,
        "kept": 6,
        "failed_requests": 1,
        "rejected": report["rejected"],
    }
    assert sum(report["rouge_l"]["counts"]) == report["rouge_l"]["checked"] == 8  # kept 6 + 2 duplicates
    assert (folder / "report.png").stat().st_size > 5000
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["synth"]["file_name"] == "synth.jsonl"
    duplicates = [e for e in read_jsonl(folder / "synth_log.jsonl") if e["verdict"] == "duplicate"]
    assert [e["rouge_l"] for e in duplicates][0] == 1.0 and 0.7 <= duplicates[1]["rouge_l"] < 1.0


def many_tasks() -> object:
    """A teacher that writes three new tasks of made-up words each time, and one task it already sent to this
    job (a duplicate)."""
    sent: list[tuple[str, str, str]] = []

    def reply(prompt: str) -> Reply:
        rng = random.Random(len(sent))
        vocab = [
            f"{a}{b}"
            for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "ri")
            for b in ("b", "d", "m", "r", "s")
        ]
        new = [(f"Describe {' '.join(rng.sample(vocab, 7))}.", "", "an answer") for _ in range(3)]
        repeat = [sent[len(sent) // 2]] if sent else []
        sent.extend(new)
        time.sleep(0.2)
        return Reply(tasks_text(new + repeat))

    return reply


def test_a_killed_run_continues_without_writing_any_row_twice(tmp_path):
    out = tmp_path / "synth"
    config = tmp_path / "synth.yaml"
    keys = {
        "synth_output_dir": str(out),
        "synth_num_rows": 30,
        "synth_concurrency": 2,
        "synth_max_retries": 0,
    }
    with TeacherServer(default=many_tasks()) as server:
        config.write_text(yaml.safe_dump({**keys, "synth_base_url": server.url}))
        env = {**os.environ, "TUNEFORGE_HOME": str(tmp_path / "home")}
        child = subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", "synth", str(config)], env=env)
        rows_file = out / "synth.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not rows_file.is_file() or len(read_jsonl(rows_file)) < 6):
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        before = read_jsonl(rows_file)
        assert 6 <= len(before) < 30
        with rows_file.open("a") as fh:  # as if the kill had landed in the middle of a line
            fh.write('{"instruction": "Describe half a')
        assert main(["synth", str(config)]) == 0
    rows = read_jsonl(rows_file)
    assert len(rows) == 30 and rows[: len(before)] == before
    assert len({r["instruction"] for r in rows}) == 30
    log = read_jsonl(out / "synth_log.jsonl")
    assert sum(e["verdict"] == "duplicate" for e in log) >= 2  # the teacher's repeats, across both runs


def test_answer_mode_fills_answers_and_its_output_trains(tmp_path, tiny_model_dir):
    source = tmp_path / "questions.json"
    questions = [{"instruction": f"What is {i} plus {i}?", "input": ""} for i in range(5)]
    questions.append({"instruction": "Translate to French.", "input": "good morning"})
    questions.append(questions[0])  # the same instruction twice is answered once
    source.write_text(json.dumps(questions), encoding="utf-8")

    def answer(prompt: str) -> Reply:
        if prompt.startswith("What is 3"):
            return Reply("")  # an empty answer is not a row
        return Reply(f"Answer to: {prompt}")

    out = tmp_path / "synth"
    with TeacherServer(default=answer) as server:
        keys = {"synth_mode": "answer", "synth_source_file": str(source), "synth_concurrency": 3}
        folder = run_synth(synth_config(server, out, **keys))
    rows = read_jsonl(folder / "synth.jsonl")
    assert len(rows) == 5 and len(server.prompts) == 6
    french = next(r for r in rows if r["instruction"] == "Translate to French.")
    assert french == {
        "instruction": "Translate to French.",
        "input": "good morning",
        "output": "Answer to: Translate to French.\n\ngood morning",
    }
    assert json.loads((folder / "report.json").read_text())["rejected"] == {"empty": 1}

    from tests.train.test_sft_stage import tiny_run_keys
    from tuneforge.train.stages import run_stage

    keys = tiny_run_keys(
        tiny_model_dir, tmp_path / "run", dataset="synth", dataset_dir=str(folder), max_steps=1
    )
    trained = run_stage(build_config(keys))
    records = read_jsonl(trained / "metrics.jsonl")
    assert any("loss" in r and r["loss"] > 0 for r in records)


def test_preference_mode_picks_the_answer_the_teacher_judged_better(tmp_path):
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({"instruction": f"Describe colour {i}."}) + "\n" for i in range(8)))
    calls: dict[str, int] = {}

    def teacher(prompt: str) -> Reply:
        if "[Answer A]" in prompt:
            if "colour 5" in prompt:
                return Reply("Both are fine.")  # no verdict
            first = prompt.split("[Answer A]")[1].split("[Answer B]")[0]
            return Reply("A" if "better" in first else "B")
        calls[prompt] = calls.get(prompt, 0) + 1
        if "colour 6" in prompt:
            return Reply("same answer")
        return Reply("a better, fuller answer" if calls[prompt] % 2 else "worse")

    with TeacherServer(default=teacher) as server:
        keys = {"synth_mode": "preference", "synth_source_file": str(source), "synth_dataset_name": "pairs"}
        folder = run_synth(synth_config(server, tmp_path / "out", **keys))
    rows = read_jsonl(folder / "pairs.jsonl")
    assert len(rows) == 6
    assert all(r["chosen"] == "a better, fuller answer" and r["rejected"] == "worse" for r in rows)
    assert json.loads((folder / "report.json").read_text())["rejected"] == {
        "bad_judgement": 1,
        "identical_answers": 1,
    }
    entry = json.loads((folder / "dataset_info.json").read_text())["pairs"]
    assert entry["ranking"] is True and entry["file_name"] == "pairs.jsonl"
    loaded = load_examples(
        build_config({"dataset": "pairs", "dataset_dir": str(folder), "stage": "dpo"}).data
    )
    assert len(loaded.examples) == 6 and loaded.examples[0].rejected


def test_patience_stops_a_silent_teacher_bad_keys_stop_at_once_and_max_tokens_adapts(tmp_path, capsys):
    with TeacherServer(default=lambda p: Reply("I am just a chat bot.")) as server:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"synth_base_url": server.url, "synth_output_dir": str(tmp_path / "o"),
                                          "synth_patience": 3, "synth_concurrency": 1}))  # fmt: skip
        assert main(["synth", str(config)]) == 2
        err = capsys.readouterr().err
        assert "the last 3 requests kept no row" in err and "'malformed': 3" in err
    unsupported = Status(400, "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.")
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"instruction": "Say hi."}) + "\n")
    with TeacherServer([unsupported], default=lambda p: Reply("hi")) as server:
        keys = {"synth_mode": "answer", "synth_source_file": str(source)}
        assert (
            read_jsonl(run_synth(synth_config(server, tmp_path / "r", **keys)) / "synth.jsonl")[0]["output"]
            == "hi"
        )
    assert "max_tokens" in server.bodies[0] and server.bodies[1]["max_completion_tokens"] == 2048
    refused = pytest.raises(Exception, match="refused the request .*HTTP 401.*synth_api_key")
    with TeacherServer([Status(401)]) as server, refused:
        run_synth(synth_config(server, tmp_path / "p", synth_seed_file=str(seed_file(tmp_path))))


@pytest.mark.slow  # SmolLM2 weights
def test_against_tuneforge_serve_running_smollm2(tmp_path, smollm2_dir):
    from tuneforge.config import GeneratingArguments, ModelArguments
    from tuneforge.inference.engine import InferenceEngine
    from tuneforge.serve.server import BackgroundServer

    source = tmp_path / "questions.jsonl"
    questions = ["What is the capital of France?", "Name a colour of the sky.", "What do bees make?"]
    source.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in questions))
    engine = InferenceEngine(ModelArguments(), GeneratingArguments(do_sample=False), batch_wait_s=0.05)
    try:
        with BackgroundServer(engine) as server:
            keys = {"synth_base_url": f"{server.url}/v1", "synth_output_dir": str(tmp_path / "answers"),
                    "synth_mode": "answer", "synth_source_file": str(source), "synth_max_tokens": 96,
                    "synth_concurrency": 3, "synth_temperature": 0.0}  # fmt: skip
            folder = run_synth(build_config(keys))
            rows = read_jsonl(folder / "synth.jsonl")
            instruct = dict(keys, synth_mode="instruct", synth_output_dir=str(tmp_path / "tasks"),
                            synth_num_rows=2, synth_max_tokens=160, synth_patience=2, synth_concurrency=2)  # fmt: skip
            try:
                tasks_folder = run_synth(build_config(instruct))
            except Exception as err:  # a 135M model may not manage the format; that must be said, not crash
                assert "requests kept no row" in str(err)
                tasks_folder = tmp_path / "tasks"
    finally:
        engine.close()
    assert [r["instruction"] for r in rows] == questions[: len(rows)] and len(rows) >= 2
    assert any("paris" in r["output"].lower() for r in rows)
    report = json.loads((tasks_folder / "report.json").read_text())
    log = read_jsonl(tasks_folder / "synth_log.jsonl")
    assert report["this_run"]["requests"] >= 2 and len(log) == report["this_run"]["kept"] + sum(
        report["rejected"].values()
    )
