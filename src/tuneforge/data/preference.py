"""Preference and KTO rows tokenized for the alignment stages (rm, dpo, kto).

A preference pair is the same conversation twice, ending once with the chosen and once with the
rejected answer; only that last answer is labelled (the preference is about it). A KTO row is one
conversation with a desirable/undesirable flag, kept as prompt + answer so the KTO collator can
also build mismatched pairs (prompt i with answer i+1) for its KL estimate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuneforge.config import DataArguments
from tuneforge.data.collator import pad_batch
from tuneforge.data.conversation import Conversation, DataError
from tuneforge.data.dataset import CHUNK, keep_image_tokens, split_validation, tokenize_chunk
from tuneforge.data.loader import RowProblem, load_examples
from tuneforge.data.template import chat_template_for, template_options
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample
from tuneforge.data.visual import TEXT_ONLY, VisionFamily, refuse_images
from tuneforge.utils.log import info, warn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Row = dict[str, Any]


@dataclass
class PreferenceData:
    train: list[Row]
    eval: list[Row] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # rows whose answer did not fit cutoff_len
    skipped: list[RowProblem] = field(default_factory=list)

    def summary(self, kind: str) -> str:
        text = f"{len(self.train)} {kind} for training"
        if self.eval:
            text += f", {len(self.eval)} for evaluation"
        if self.dropped:
            text += (
                f", {len(self.dropped)} dropped with no answer token (or a cut image) within cutoff_len "
                f"(first: {self.dropped[0]})"
            )
        if self.skipped:
            text += f", {len(self.skipped)} bad rows skipped"
        return text


def _tokenize_last_answer(
    conversations: list[Conversation],
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    family: VisionFamily | None = None,
    why: str = TEXT_ONLY,
) -> list[TokenizedExample | None]:
    """Each conversation tokenized with only its last answer labelled; with a vision-language `family` its
    images expanded to their tokens (None for a row whose image tokens cutoff_len cuts)."""
    last_only = args.model_copy(update={"mask_history": True, "train_on_prompt": False})
    template = chat_template_for(tokenizer, args.template, **template_options(args))
    if family is None:
        refuse_images(conversations, why)
    else:
        conversations = [family.expand(c) for c in conversations]
    out: list[TokenizedExample | None] = []
    for start in range(0, len(conversations), CHUNK):
        chunk = conversations[start : start + CHUNK]
        for conversation, example in zip(
            chunk, tokenize_chunk(chunk, last_only, tokenizer, template), strict=True
        ):
            if family is not None and conversation.images:
                example.images = conversation.images
                if not keep_image_tokens(example, conversation, family):
                    out.append(None)
                    continue
            out.append(example)
    return out


def _load(args: DataArguments, seed: int, wanted: str) -> tuple[list[Conversation], list[RowProblem]]:
    loaded = load_examples(args, args.on_bad_rows, seed)
    conversations = [e for e in loaded.examples if isinstance(e, Conversation)]
    if wanted == "pairs":
        usable = [c for c in conversations if c.rejected is not None]
        hint = "preference rows: `ranking: true` in dataset_info.json with chosen/rejected columns"
    else:
        usable = [c for c in conversations if c.kto_label is not None]
        hint = "KTO rows: a `kto_tag` column (true for a desirable answer) in dataset_info.json"
    if len(usable) != len(loaded.examples):
        kept = {id(c) for c in usable}
        first = next(e.source for e in loaded.examples if id(e) not in kept)
        raise DataError(
            f"{len(loaded.examples) - len(usable)} of {len(loaded.examples)} rows are not {hint.split(':')[0]} "
            f"(first: {first}); this stage needs {hint}",
            "wrong_stage",
        )
    return usable, loaded.problems


def build_pair_data(
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 42,
    family: VisionFamily | None = None,
    why: str = TEXT_ONLY,
) -> PreferenceData:
    """Rows `{chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels}` (and the prompt's
    `images` with a vision-language model's `family`)."""
    pairs, problems = _load(args, seed, "pairs")
    rejected = [dataclasses.replace(c, messages=[*c.messages[:-1], c.rejected], rejected=None) for c in pairs]
    data = PreferenceData(train=[], skipped=problems)
    for pair, chosen_ex, rejected_ex in zip(
        pairs,
        _tokenize_last_answer(pairs, args, tokenizer, family, why),
        _tokenize_last_answer(rejected, args, tokenizer, family, why),
        strict=True,
    ):
        if not (chosen_ex and rejected_ex and chosen_ex.trainable_tokens and rejected_ex.trainable_tokens):
            data.dropped.append(pair.source)
            continue
        row = {
            "chosen_input_ids": chosen_ex.input_ids,
            "chosen_labels": chosen_ex.labels,
            "rejected_input_ids": rejected_ex.input_ids,
            "rejected_labels": rejected_ex.labels,
        }
        if chosen_ex.images:
            row["images"] = chosen_ex.images
        data.train.append(row)
    return _finish(data, args, seed, "preference pairs")


def build_kto_data(args: DataArguments, tokenizer: PreTrainedTokenizerBase, seed: int = 42) -> PreferenceData:
    """Rows `{prompt_ids, answer_ids, label}`: the answer is the labelled tail of the tokenized row."""
    rows, problems = _load(args, seed, "kto")
    data = PreferenceData(train=[], skipped=problems)
    kto_text = "stage kto trains on text only so far; use stage sft or dpo for rows with images"
    for conversation, example in zip(
        rows, _tokenize_last_answer(rows, args, tokenizer, why=kto_text), strict=True
    ):
        assert example is not None  # only image rows can be dropped, and KTO refuses them
        if not example.trainable_tokens:
            data.dropped.append(example.source)
            continue
        start = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        data.train.append(
            {
                "prompt_ids": example.input_ids[:start],
                "answer_ids": example.input_ids[start:],
                "label": bool(conversation.kto_label),
            }
        )
    kinds = {row["label"] for row in data.train}
    if data.train and len(kinds) < 2:
        warn(
            f"every KTO row is {'desirable' if True in kinds else 'undesirable'}; "
            "KTO learns most from both kinds"
        )
    return _finish(data, args, seed, "KTO rows")


def _finish(data: PreferenceData, args: DataArguments, seed: int, kind: str) -> PreferenceData:
    if not data.train:
        raise DataError(f"no {kind} left with an answer token within cutoff_len={args.cutoff_len}", "empty")
    if args.val_size > 0:
        data.train, data.eval = split_validation(data.train, args.val_size, seed)
    info(f"{data.summary(kind)}")
    return data


class PairCollator:
    """`[2 * batch, seq]`: the chosen sequences first, then the rejected ones in the same order."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[Row]) -> dict[str, Any]:
        ids = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        labels = [r["chosen_labels"] for r in rows] + [r["rejected_labels"] for r in rows]
        return _with_ids(pad_batch(ids, labels, self.pad_token_id), rows)


def _with_ids(batch: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """Carry `sample_id`s (for the numerics guard's report of a skipped step)."""
    if "sample_id" in rows[0]:
        import torch

        batch["sample_ids"] = torch.tensor([r["sample_id"] for r in rows])
    return batch


def batch_from_pieces(prompts: list[list[int]], answers: list[list[int]], pad_id: int) -> dict[str, Any]:
    """Right-padded `prompt + answer` rows with only the answers labelled."""
    ids = [p + a for p, a in zip(prompts, answers, strict=True)]
    labels = [[IGNORE_INDEX] * len(p) + a for p, a in zip(prompts, answers, strict=True)]
    return pad_batch(ids, labels, pad_id)


class KTOCollator:
    """The matched rows `[batch, seq]` plus, under `kl_*`, mismatched ones (prompt i, answer i+1) for the KL estimate."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[Row]) -> dict[str, Any]:
        import torch

        prompts = [r["prompt_ids"] for r in rows]
        answers = [r["answer_ids"] for r in rows]
        batch = batch_from_pieces(prompts, answers, self.pad_token_id)
        shifted = answers[1:] + answers[:1] if len(rows) > 1 else answers
        kl = batch_from_pieces(prompts, shifted, self.pad_token_id)
        batch.update({f"kl_{k}": v for k, v in kl.items()})
        batch["desirable"] = torch.tensor([r["label"] for r in rows])
        return _with_ids(batch, rows)


def build_prompt_data(
    args: DataArguments, tokenizer: PreTrainedTokenizerBase, seed: int = 42
) -> PreferenceData:
    """Rows `{prompt_ids, answer}` for reinforcement learning: each conversation without its last answer,
    rendered up to where the model's answer starts; the answer (if any) is the reference for rewards."""
    from tuneforge.data.template import render_prompt

    loaded = load_examples(args, args.on_bad_rows, seed)
    template = chat_template_for(tokenizer, args.template, **template_options(args))
    rl_text = (
        "the reinforcement-learning stages (ppo, grpo, online_dpo) generate from text prompts only so far"
    )
    refuse_images([e for e in loaded.examples if isinstance(e, Conversation)], rl_text)
    data = PreferenceData(train=[], skipped=loaded.problems)
    for example in loaded.examples:
        if not isinstance(example, Conversation):
            raise DataError(
                f"{example.source}: plain text has no prompt to answer; RL stages need chat rows",
                "wrong_stage",
            )
        turns = [m.as_dict() for m in example.messages[:-1]]
        ids = render_prompt(turns, tokenizer, template, example.system, example.tools)
        if len(ids) >= args.cutoff_len:
            data.dropped.append(example.source)
            continue
        data.train.append({"prompt_ids": ids, "answer": example.messages[-1].content})
    return _finish(data, args, seed, "prompts")


class PromptCollator:
    """Prompts stay token lists (they are left-padded for generation by the trainer)."""

    def __call__(self, rows: list[Row]) -> dict[str, Any]:
        batch = {"prompt_ids": [r["prompt_ids"] for r in rows], "answer": [r["answer"] for r in rows]}
        return _with_ids(batch, rows)
