"""`do_predict`: generate an answer for every row of `eval_dataset` with the inference engine (batched), write
them beside the references, and score them as LLaMA-Factory's predict configs do (BLEU-4, ROUGE-1/2/L)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.data.conversation import Conversation
from tuneforge.utils.errors import UserError
from tuneforge.utils.log import info


def prediction_rows(cfg: RunConfig) -> list[Conversation]:
    """The conversations of eval_dataset (max_samples each), checked like training data."""
    from tuneforge.data.loader import load_examples

    args = cfg.data.model_copy(update={"dataset": cfg.data.eval_dataset})
    rows = [
        e
        for e in load_examples(args, on_bad_rows=cfg.data.on_bad_rows).examples
        if isinstance(e, Conversation)
    ]
    if not rows:
        raise UserError("eval_dataset holds no conversations to answer")
    return rows


def run_predict(cfg: RunConfig) -> Path:
    """Write generated_predictions.jsonl and predict_results.json into output_dir; returns output_dir."""
    from tuneforge.eval.metrics import generation_metrics
    from tuneforge.inference.engine import InferenceEngine

    out = Path(cfg.training.output_dir)
    if (
        out.is_dir()
        and (out / "generated_predictions.jsonl").exists()
        and not cfg.training.overwrite_output_dir
    ):
        raise UserError(
            f"{out} already holds predictions; set overwrite_output_dir: true to write them again"
        )
    rows = prediction_rows(cfg)  # bad data fails before weights load
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written: list[dict[str, Any]] = []
    with InferenceEngine.from_config(cfg) as engine:
        params = engine.sampling_params()
        size = cfg.training.per_device_eval_batch_size
        for first in range(0, len(rows), size):
            batch = rows[first : first + size]
            prompts = []
            for row in batch:
                turns = [{"role": m.role, "content": m.content} for m in row.messages[:-1]]
                prompts.append(engine.render(turns, system=row.system, tools=row.tools))
            handles = [engine.submit(p, engine.fit(params, len(p))) for p in prompts]
            for row, prompt, handle in zip(batch, prompts, handles, strict=True):
                answer = handle.result()
                written.append(
                    {
                        "prompt": engine.tokenizer.decode(prompt),
                        "predict": answer.text,
                        "label": row.messages[-1].content,
                    }
                )
    seconds = time.perf_counter() - start
    with (out / "generated_predictions.jsonl").open("w", encoding="utf-8") as fh:
        for record in written:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    scores = generation_metrics([r["predict"] for r in written], [r["label"] for r in written])
    results = {f"predict_{k}": v for k, v in scores.items()}
    results.update(
        predict_runtime=round(seconds, 4), predict_samples_per_second=round(len(written) / seconds, 3)
    )
    (out / "predict_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for key, value in results.items():
        print(f"  {key} = {value}")
    info(f"predictions in {out / 'generated_predictions.jsonl'}, scores in {out / 'predict_results.json'}")
    return out
