"""BLEU-4 and ROUGE-1/2/L of generated answers against references, computed as LLaMA-Factory computes them
(its `do_predict` results), with the libraries it uses: jieba splits words (Chinese and English alike),
rouge-chinese scores the word sequences (F1), nltk's sentence BLEU scores characters with smoothing
method 3. Each score is averaged over the rows and given in percent."""

from __future__ import annotations

from collections.abc import Sequence


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """{"bleu-4", "rouge-1", "rouge-2", "rouge-l"}: the mean over rows of each score, in percent."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba.setLogLevel(60)  # its dictionary-loading chatter is not for the user
    scores: dict[str, list[float]] = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    smoothing = SmoothingFunction().method3
    for prediction, reference in zip(predictions, references, strict=True):
        hypothesis, target = " ".join(jieba.cut(prediction)), " ".join(jieba.cut(reference))
        if not hypothesis.split() or not target.split():
            rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
        else:
            rouge = {k: v["f"] for k, v in Rouge().get_scores(hypothesis, target)[0].items()}
        for key, value in rouge.items():
            scores[key].append(round(value * 100, 4))
        bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=smoothing)
        scores["bleu-4"].append(round(bleu * 100, 4))
    return {key: sum(values) / len(values) if values else 0.0 for key, values in scores.items()}
