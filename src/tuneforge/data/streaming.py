"""`streaming: true`: rows are read, templated and tokenized while training runs, a chunk at a time.

Memory stays flat however large the files are, and training starts at once. The stream starts over
at the end of the data until `max_steps` is reached. Packing packs each chunk of rows; `val_size: N`
(a whole number) holds out the first N rows for evaluation. A bad row stops the run where
it is met (`on_bad_rows: error`) or is skipped; run `tuneforge data validate` first to see them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch

from tuneforge.config import DataArguments
from tuneforge.data.collator import PaddingCollator
from tuneforge.data.conversation import Conversation, DataError
from tuneforge.data.dataset import tokenize_chunk
from tuneforge.data.loader import RowProblem, dataset_rows
from tuneforge.data.packing import collator_for, pack_examples
from tuneforge.data.template import chat_template_for, template_options
from tuneforge.utils.log import warn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHUNK = 256


def iter_conversations(args: DataArguments, on_problem: Any) -> Iterator[Conversation]:
    """Conversations of every dataset in order (`max_samples` / `num_samples` each); bad rows go to
    `on_problem`."""
    for name in args.dataset or []:
        for row in dataset_rows(name, args, streaming=True):
            if isinstance(row, RowProblem):
                on_problem(row)
            elif isinstance(row, Conversation):
                yield row


class StreamingSFTDataset(torch.utils.data.IterableDataset):
    """Yields `{"input_ids", "labels"}` rows (with `position_ids` when packed), tokenizing `CHUNK`
    conversations per batched call. With `packing`/`neat_packing` the rows of each chunk are packed
    together; with `val_size: N` the first N rows are held out for evaluation and never trained on."""

    def __init__(self, args: DataArguments, tokenizer: PreTrainedTokenizerBase, rows_per_step: int = 1):
        self.args = args
        self.tokenizer = tokenizer
        self.template = chat_template_for(tokenizer, args.template, **template_options(args))
        self.rows_per_step = rows_per_step
        self.holdout = int(args.val_size)
        self.packing = bool(args.packing or args.neat_packing)
        self.skipped = 0

    def _problem(self, problem: RowProblem) -> None:
        if self.args.on_bad_rows == "error":
            raise DataError(
                f"{problem.message}\n(set on_bad_rows: skip to train without such rows)", problem.category
            )
        self.skipped += 1
        warn(f"skipped bad row {problem.message}")

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        """Pass after pass over the data, without end: the Trainer stops at max_steps. One endless stream
        keeps gradient accumulation whole; the Trainer cannot finish a step split across the end of an
        iterable dataset of unknown length."""
        while True:
            yielded = 0
            for row in self._one_pass():
                yielded += 1
                yield row
            if yielded < self.rows_per_step:
                raise self._too_small(yielded)

    def _one_pass(self) -> Iterator[dict[str, list[int]]]:
        chunk: list[Conversation] = []
        conversations = iter_conversations(self.args, self._problem)
        next(islice(conversations, self.holdout, self.holdout), None)  # past the evaluation rows
        for conversation in conversations:
            chunk.append(conversation)
            if len(chunk) == CHUNK:
                yield from self._tokenized(chunk)
                chunk = []
        yield from self._tokenized(chunk)

    def eval_rows(self) -> list[dict[str, list[int]]]:
        """The first `val_size` rows of the stream, tokenized (and packed) like the training rows."""
        if not self.holdout:
            return []
        held = list(islice(iter_conversations(self.args, self._problem), self.holdout))
        rows = list(self._tokenized(held))
        if len(held) < self.holdout or not rows:
            raise DataError(
                f"val_size={self.holdout} holds out more rows than the stream has ({len(held)}); lower val_size",
                "config",
            )
        return rows

    def _too_small(self, rows: int) -> DataError:
        return DataError(
            f"the stream holds {rows} usable rows, fewer than one optimizer step takes "
            f"({self.rows_per_step} = batch size x gradient_accumulation_steps); lower those or add data",
            "empty",
        )

    def _tokenized(self, chunk: list[Conversation]) -> Iterator[dict[str, list[int]]]:
        with_images = next((c for c in chunk if c.images), None)
        if with_images is not None:
            raise DataError(
                f"{with_images.source}: rows with images, videos or audio are not streamed yet; set streaming: false",
                "multimodal",
            )
        examples = [
            e for e in tokenize_chunk(chunk, self.args, self.tokenizer, self.template) if e.trainable_tokens
        ]
        if self.packing:  # best fit within the chunk: a stream has no "all rows" to pack
            for sequence in pack_examples(examples, self.args.cutoff_len, self.args.neat_packing):
                yield sequence.as_row()
        else:
            for example in examples:
                yield {"input_ids": example.input_ids, "labels": example.labels}

    def collator(self, pad_token_id: int) -> PaddingCollator:
        return collator_for(self.args, pad_token_id)

    def first_rows(self, count: int) -> list[dict[str, list[int]]]:
        """Read the first rows (at least one optimizer step's worth) now, so format, template and size
        problems show before weights load."""
        count = max(count, self.rows_per_step)
        rows = []
        for row in self._one_pass():
            rows.append(row)
            if len(rows) == count:
                break
        if len(rows) < self.rows_per_step:
            raise self._too_small(len(rows))
        return rows
