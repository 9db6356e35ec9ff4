"""Turn the configured datasets into tokenized training (and evaluation) examples, counting what was cut or dropped."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuneforge.config import DataArguments
from tuneforge.data.conversation import DataError
from tuneforge.data.loader import load_conversations
from tuneforge.data.template import TokenizedExample, chat_template_for, render_with_loss_mask

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class SFTData:
    train: list[TokenizedExample]
    eval: list[TokenizedExample] = field(default_factory=list)
    truncated: int = 0
    dropped_no_target: list[str] = field(default_factory=list)

    def summary(self) -> str:
        tokens = sum(len(e.input_ids) for e in self.train)
        text = f"{len(self.train)} training rows ({tokens} tokens)"
        if self.eval:
            text += f", {len(self.eval)} evaluation rows"
        if self.truncated:
            text += f", {self.truncated} truncated to cutoff_len"
        if self.dropped_no_target:
            text += f", {len(self.dropped_no_target)} dropped with no trainable token left"
        return text


def build_sft_data(args: DataArguments, tokenizer: PreTrainedTokenizerBase, seed: int = 42) -> SFTData:
    """Tokenize every conversation; rows whose answer is cut away entirely are dropped and counted, never trained on."""
    template = chat_template_for(tokenizer, args.template)
    data = SFTData(train=[])
    examples: list[TokenizedExample] = []
    for conversation in load_conversations(args):
        example = render_with_loss_mask(
            conversation, tokenizer, template, args.cutoff_len, args.train_on_prompt, args.mask_history
        )
        data.truncated += example.truncated
        if example.trainable_tokens == 0:
            data.dropped_no_target.append(example.source)
            continue
        examples.append(example)
    if data.dropped_no_target:
        shown = ", ".join(data.dropped_no_target[:5])
        print(
            f"tuneforge: {len(data.dropped_no_target)} rows have no answer token within cutoff_len="
            f"{args.cutoff_len} and are skipped (first: {shown})",
            file=sys.stderr,
        )
    if not examples:
        raise DataError(f"no row has a trainable token within cutoff_len={args.cutoff_len}; raise cutoff_len")
    data.train = examples
    if args.val_size > 0:
        count = int(args.val_size) if args.val_size >= 1 else max(1, round(len(examples) * args.val_size))
        if count >= len(examples):
            raise DataError(f"val_size={args.val_size} leaves no training rows out of {len(examples)}")
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        held = set(order[:count])
        data.eval = [e for i, e in enumerate(examples) if i in held]
        data.train = [e for i, e in enumerate(examples) if i not in held]
    return data
