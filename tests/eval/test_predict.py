"""do_predict: answers generated for eval_dataset and scored with BLEU-4 and ROUGE as LLaMA-Factory scores them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneforge.cli.main import main
from tuneforge.config import load_config
from tuneforge.eval.metrics import generation_metrics

REPO = Path(__file__).resolve().parents[2]


def test_scores_on_fixed_strings_equal_the_hand_computed_ones():
    # words: the/cat/sat vs the/cat/ran: ROUGE-1 F = 2/3, ROUGE-2 = 1/2, ROUGE-L (LCS 2) = 2/3.
    # characters: clipped n-gram precisions 9/11, 7/10, 6/9, 5/8, equal lengths: BLEU = (their product)^(1/4)
    scores = generation_metrics(["the cat sat"], ["the cat ran"])
    bleu = (9 / 11 * 7 / 10 * 6 / 9 * 5 / 8) ** 0.25 * 100
    assert scores == pytest.approx(
        {"rouge-1": 66.6667, "rouge-2": 50.0, "rouge-l": 66.6667, "bleu-4": bleu}, abs=1e-3
    )
    # Chinese is segmented into words by jieba: 我/爱/北京 vs 我/爱/上海
    chinese = generation_metrics(["我爱北京"], ["我爱上海"])
    assert chinese["rouge-1"] == pytest.approx(66.6667) and chinese["rouge-2"] == pytest.approx(50.0)
    assert generation_metrics(["same words"], ["same words"]) == pytest.approx(dict.fromkeys(scores, 100.0))
    assert generation_metrics([""], ["x"]) == dict.fromkeys(scores, 0.0)
    two = generation_metrics(["the cat sat", "same three words"], ["the cat ran", "same three words"])
    assert two["rouge-2"] == pytest.approx((50.0 + 100.0) / 2)  # the mean over rows


def test_a_llamafactory_predict_config_writes_predictions_and_scores(tiny_model_dir, tmp_path, capsys):
    keys = {
        "model_name_or_path": str(tiny_model_dir), "stage": "sft", "do_train": False, "do_predict": True,
        "predict_with_generate": True, "eval_dataset": "identity", "dataset_dir": str(REPO / "data"),
        "max_samples": 5, "max_new_tokens": 8, "do_sample": False, "per_device_eval_batch_size": 2,
        "output_dir": str(tmp_path / "predict"), "template": "qwen",
    }  # fmt: skip
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump(keys))
    assert main(["train", str(config)]) == 0
    rows = [
        json.loads(x) for x in (tmp_path / "predict" / "generated_predictions.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 5 and all({"prompt", "predict", "label"} <= set(r) for r in rows)
    assert "<|im_start|>assistant" in rows[0]["prompt"]  # rendered with the named template
    results = json.loads((tmp_path / "predict" / "predict_results.json").read_text())
    expected = generation_metrics([r["predict"] for r in rows], [r["label"] for r in rows])
    assert {k: results[f"predict_{k}"] for k in expected} == pytest.approx(expected)
    assert "predict_bleu-4" in capsys.readouterr().out


def test_predict_configs_are_checked_before_anything_runs():
    for keys, words in (
        (
            {"do_predict": True, "do_train": True, "predict_with_generate": True, "eval_dataset": "i"},
            "do_train: false",
        ),
        ({"do_predict": True, "do_train": False, "eval_dataset": "identity"}, "predict_with_generate"),
        ({"do_predict": True, "do_train": False, "predict_with_generate": True}, "needs the datasets"),
        ({"eval_dataset": "identity"}, "hold out training rows with val_size"),
    ):
        with pytest.raises(Exception, match=words):
            load_config(extra=keys)
