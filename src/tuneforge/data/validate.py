"""`tuneforge data validate` and `preview`: read everything a run would read and say what is wrong, row by row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuneforge.config import DataArguments
from tuneforge.data.conversation import Conversation, Document
from tuneforge.data.dataset import tokenize_conversations, tokenize_for_pretraining
from tuneforge.data.loader import RowProblem, load_examples
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample
from tuneforge.data.visual import VisionFamily

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class ValidationReport:
    rows_read: int
    problems: list[RowProblem]
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    special_token_rows: list[str] = field(default_factory=list)
    cutoff_len: int = 0
    documents: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"read {self.rows_read} rows; {len(self.problems)} bad"]
        for problem in self.problems:
            lines.append(f"  {problem.message}  [{problem.category}]")
        if self.problems:
            counts = Counter(p.category for p in self.problems)
            lines.append("bad rows by category: " + ", ".join(f"{c} {n}" for c, n in counts.most_common()))
        if self.lengths:
            lines.append(
                "tokens per row after templating: "
                + ", ".join(f"p{q} {percentile(self.lengths, q)}" for q in (50, 90, 99))
                + f", max {max(self.lengths)} (cutoff_len {self.cutoff_len})"
            )
        lines.append(f"rows truncated to cutoff_len: {self.truncated}")
        if self.special_token_rows:
            lines.append(
                f"warning: {len(self.special_token_rows)} rows have special tokens written in prompt text, "
                f"e.g. {self.special_token_rows[0]}"
            )
        if self.documents:
            lines.append(f"plain-text rows (pretraining): {self.documents}")
        lines.append("OK: no bad rows" if self.clean else f"FAILED: {len(self.problems)} bad rows")
        return "\n".join(lines)


def percentile(values: list[int], q: int) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def validate_data(
    args: DataArguments, tokenizer: PreTrainedTokenizerBase, family: VisionFamily | None = None
) -> ValidationReport:
    """Every bad row with file:line, field and reason; token-length percentiles; truncation counts."""
    loaded = load_examples(args, on_bad_rows="skip")
    conversations = [e for e in loaded.examples if isinstance(e, Conversation)]
    data = tokenize_conversations(conversations, args, tokenizer, family)
    problems = list(loaded.problems)
    problems += [
        RowProblem(
            s, "no_trainable_tokens", f"{s}: no answer token is left within cutoff_len={args.cutoff_len}"
        )
        for s in data.dropped_no_target
    ]
    problems += [
        RowProblem(s, "image_cut", f"{s}: cutoff_len={args.cutoff_len} cuts through the row's image tokens")
        for s in data.dropped_cut_images
    ]
    return ValidationReport(
        rows_read=loaded.rows_read,
        problems=problems,
        lengths=[len(e.input_ids) for e in data.train],
        truncated=data.truncated,
        special_token_rows=data.special_token_rows,
        cutoff_len=args.cutoff_len,
        documents=sum(isinstance(e, Document) for e in loaded.examples),
    )


@dataclass
class Preview:
    """The first rows as training sees them, the bad rows among those read, and rows left with nothing to train."""

    rows: list[TokenizedExample]
    problems: list[RowProblem]
    dropped: list[str]


def preview_rows(
    args: DataArguments, tokenizer: PreTrainedTokenizerBase, rows: int, family: VisionFamily | None = None
) -> Preview:
    """Render and tokenize the first `rows` rows exactly as a run would (template, masks, cutoff)."""
    loaded = load_examples(args.model_copy(update={"max_samples": rows}), on_bad_rows="skip")
    conversations = [e for e in loaded.examples if isinstance(e, Conversation)][:rows]
    if not conversations:  # plain text for pretraining: each row as its first cutoff_len block
        data = tokenize_for_pretraining(loaded.examples[:rows], args, tokenizer)
        firsts = {e.source: e for e in reversed(data.train)}
        return Preview(list(firsts.values())[::-1], loaded.problems, [])
    data = tokenize_conversations(conversations, args, tokenizer, family)
    return Preview(data.train, loaded.problems, data.dropped_no_target)


def trainable_segments(
    example: TokenizedExample, tokenizer: PreTrainedTokenizerBase
) -> list[tuple[str, bool]]:
    """The rendered row as (text, trained) runs of consecutive tokens with the same mask."""
    segments: list[tuple[str, bool]] = []
    run: list[int] = []
    trained = False
    for token, label in [*zip(example.input_ids, example.labels, strict=True), (None, None)]:
        is_trained = label is not None and label != IGNORE_INDEX
        if token is None or is_trained != trained:
            if run:
                segments.append((tokenizer.decode(run), trained))
            run, trained = [], is_trained
        if token is not None:
            run.append(token)
    return segments


def mark_trainable(example: TokenizedExample, tokenizer: PreTrainedTokenizerBase, color: bool) -> str:
    """The rendered row with trained spans between ⟦ and ⟧ (and green on a terminal)."""
    start, end = ("\x1b[32m⟦", "⟧\x1b[0m") if color else ("⟦", "⟧")
    return "".join(
        f"{start}{text}{end}" if trained else text for text, trained in trainable_segments(example, tokenizer)
    )
