"""report.json and report.png of a synth output folder: what was kept, what was rejected and why, how similar
the candidates were to what was already kept (ROUGE-L), and how long the kept rows are."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

ROUGE_BINS = [round(i / 10, 1) for i in range(11)]


def _histogram(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = next((k for k in range(len(edges) - 1) if v < edges[k + 1]), len(edges) - 2)
        counts[i] += 1
    return counts


def _length_edges(values: list[int]) -> list[float]:
    top = max(values, default=1)
    step = max(1, -(-top // 10))
    return [float(step * i) for i in range(11)]


def build_report(
    mode: str, rows: list[dict[str, Any]], log: list[dict[str, Any]], run: dict[str, Any]
) -> dict[str, Any]:
    """Counts over every run into this folder (`log`: one entry per candidate or failed request) and this
    run's own figures (`run`)."""
    from tuneforge.synth.filters import words

    verdicts = Counter(entry.get("verdict", "?") for entry in log)
    rejected = {k: v for k, v in sorted(verdicts.items()) if k not in ("kept", "request_failed")}
    scores = [float(e["rouge_l"]) for e in log if e.get("rouge_l") is not None]
    answer = "chosen" if mode == "preference" else "output"
    instruction_words = [len(words(r.get("instruction", ""))) for r in rows]
    answer_words = [len(words(str(r.get(answer, "")))) for r in rows]
    lengths: dict[str, Any] = {}
    for name, values in (("instruction_words", instruction_words), (f"{answer}_words", answer_words)):
        edges = _length_edges(values)
        lengths[name] = {"edges": edges, "counts": _histogram([float(v) for v in values], edges)}
    return {
        "mode": mode,
        "rows": len(rows),
        "this_run": run,
        "requests_failed": verdicts.get("request_failed", 0),
        "rejected": rejected,
        "rouge_l": {"edges": ROUGE_BINS, "counts": _histogram(scores, ROUGE_BINS), "checked": len(scores)},
        "lengths": lengths,
    }


def write_report(folder: Path, report: dict[str, Any]) -> None:
    (folder / "report.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        [("ROUGE-L F1 with the closest kept instruction", report["rouge_l"])]
        if report["mode"] == "instruct"
        else []
    )
    panels += [(f"kept rows: {name.replace('_', ' ')}", h) for name, h in report["lengths"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, hist) in zip(list(getattr(axes, "flat", [axes])), panels, strict=True):
        edges = hist["edges"]
        ax.bar(
            edges[:-1],
            hist["counts"],
            width=[b - a for a, b in zip(edges, edges[1:], strict=False)],
            align="edge",
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("rows")
    fig.suptitle(f"tuneforge synth ({report['mode']}): {report['rows']} rows kept", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "report.png", dpi=100)
    plt.close(fig)
