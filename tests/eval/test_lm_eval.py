"""lm-evaluation-harness drives `tuneforge serve` unchanged: its `local-completions` model (token-id prompts,
echo, logprobs, the remote tokenizer endpoints) scores a multiple-choice task written here, and every answer
equals what `tuneforge eval` picks for the same questions and prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config import GeneratingArguments, ModelArguments, load_config
from tuneforge.data.template import chat_template_for, render_prompt
from tuneforge.eval import run_eval
from tuneforge.eval.benchmarks import CHOICES, load_benchmark
from tuneforge.eval.scoring import messages
from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.server import BackgroundServer

lm_eval = pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow  # SmolLM2 weights

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
SHOTS = 1

TASK = """\
task: tuneforge_fixture
dataset_path: json
dataset_kwargs:
  data_files:
    test: {rows}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
"""


def test_lm_eval_local_completions_agrees_with_tuneforge_eval(smollm2_dir, tmp_path):
    save = tmp_path / "tuneforge"
    cfg = load_config(
        extra={"task": "mmlu_test", "task_dir": str(FIXTURES), "n_shot": SHOTS, "save_dir": str(save)}
    )
    ours = run_eval(cfg)["results"]["model"]
    picked = [json.loads(line)["predicted"] for line in (save / "predictions.jsonl").read_text().splitlines()]

    # the same prompts, as text: the harness tokenizes them through the server's /tokenize
    engine = InferenceEngine(ModelArguments(), GeneratingArguments(), batch_wait_s=0.05)
    template = chat_template_for(engine.tokenizer, cfg.data.template)
    bench = load_benchmark("mmlu_test", FIXTURES, "en")
    rows = []
    for subject, questions in bench.questions.items():
        for q in questions:
            chat = messages(q, bench.shots[subject][:SHOTS], bench.names[subject], "en")
            ids = render_prompt(chat, engine.tokenizer, template)
            text = engine.tokenizer.decode(ids)
            assert engine.tokenizer(text, add_special_tokens=False)["input_ids"] == ids
            rows.append({"prompt": text, "answer": CHOICES.index(q.answer)})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fixture.yaml").write_text(TASK.format(rows=tmp_path / "rows.jsonl"))

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with BackgroundServer(engine) as server:
        out = simple_evaluate(
            model="local-completions",
            model_args={
                "base_url": f"{server.url}/v1/completions",
                "model": engine.base_name,
                "tokenizer_backend": "remote",
                "max_retries": 1,
                "batch_size": 4,  # several token-id prompts per request
            },
            tasks=["tuneforge_fixture"],
            task_manager=TaskManager(include_path=str(tasks), include_defaults=False),  # not its 10k tasks
            log_samples=True,
        )
    engine.close()
    assert max(engine.batch_sizes) > 1  # the harness's batches reached the engine as batches
    samples = sorted(out["samples"]["tuneforge_fixture"], key=lambda s: s["doc_id"])
    theirs = [CHOICES[max(range(4), key=lambda i: s["filtered_resps"][i][0])] for s in samples]
    assert theirs == picked  # every question answered alike
    assert out["results"]["tuneforge_fixture"]["acc,none"] == pytest.approx(ours["average"])
