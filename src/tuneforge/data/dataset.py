"""Turn the configured datasets into tokenized training (and evaluation) examples, counting what was cut or dropped."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tuneforge.config import DataArguments
from tuneforge.data.conversation import Conversation, DataError, Document
from tuneforge.data.encode import Encoder
from tuneforge.data.loader import LoadedData, load_examples
from tuneforge.data.slot_encode import SlotEncoder
from tuneforge.data.slots import SlotTemplate
from tuneforge.data.table import SFTData, TokenTable
from tuneforge.data.template import (
    ChatTemplate,
    assistant_spans,
    chat_template_for,
    template_fingerprint,
    template_mismatch,
    template_options,
)
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample
from tuneforge.data.visual import VisionFamily, refuse_images
from tuneforge.utils.log import info, warn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def special_tokens_in_prompts(conversation: Conversation, specials: list[str]) -> list[str]:
    """Special tokens (e.g. `<|im_end|>`) written literally in prompt-side text: they would end turns early."""
    text = " ".join(m.content for m in conversation.messages if m.role != "assistant") + (
        conversation.system or ""
    )
    return [s for s in specials if s in text]


def conversations_only(loaded: LoadedData) -> list[Conversation]:
    texts = [e.source for e in loaded.examples if not isinstance(e, Conversation)]
    if texts:
        raise DataError(
            f"{len(texts)} rows are plain text for pretraining (first: {texts[0]}), which stage sft cannot train "
            "on; give the dataset a response column or use stage: pt",
            "wrong_stage",
        )
    return [e for e in loaded.examples if isinstance(e, Conversation)]


CHUNK = 1024


def render_chunk(
    conversations: list[Conversation],
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
) -> list[Any]:
    """Each row rendered for its encoder: with the tokenizer's own template the text, the character spans to
    train on and the source; with a LLaMA-Factory template its turns of pieces and the source."""
    if isinstance(template, SlotTemplate):
        return [(template.turns(c, last_only_thought=args.mask_history), c.source) for c in conversations]
    items = []
    specials = tokenizer.special_tokens_map
    for conversation in conversations:
        text, spans = assistant_spans(conversation, tokenizer, template, specials, args.enable_thinking)
        items.append((text, spans[-1:] if args.mask_history else spans, conversation.source))
    return items


def encoder_for(
    args: DataArguments, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate
) -> Encoder | SlotEncoder:
    if isinstance(template, SlotTemplate):
        return SlotEncoder(
            tokenizer, template, args.cutoff_len, args.train_on_prompt, args.mask_history, args.truncation
        )
    return Encoder(tokenizer, args.cutoff_len, args.train_on_prompt, args.truncation)


def tokenize_chunk(
    conversations: list[Conversation],
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
) -> list[TokenizedExample]:
    """Render each row, then tokenize the whole chunk in one call (the Rust tokenizer uses every core)."""
    items = render_chunk(conversations, args, tokenizer, template)
    return encoder_for(args, tokenizer, template)(items)


def _tokenize_pipelined(
    chunks: list[list[Conversation]],
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
) -> list[list[TokenizedExample]]:
    """Render (Python) the next chunk while a thread waits on the Rust tokenizer, which releases the GIL,
    for the current one: the two overlap instead of taking turns."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = encoder_for(args, tokenizer, template)
    parts: list[list[TokenizedExample]] = []
    pending = None
    with ThreadPoolExecutor(1, thread_name_prefix="tuneforge-tokenize") as pool:
        for chunk in chunks:
            items = render_chunk(chunk, args, tokenizer, template)
            encoded = pool.submit(encoder.encode, encoder.texts(items))
            if pending is not None:
                parts.append(encoder.examples(pending[0], pending[1].result()))
            pending = (items, encoded)
        if pending is not None:
            parts.append(encoder.examples(pending[0], pending[1].result()))
    return parts


def _tokenize_in_worker(job: tuple[list[Conversation], DataArguments, Any, str]) -> list[TokenizedExample]:
    return tokenize_chunk(*job)


def tokenize_conversations(
    conversations: list[Conversation],
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    family: VisionFamily | None = None,
) -> SFTData:
    """Render and tokenize in chunks (one batched fast-tokenizer call each), across
    `preprocessing_num_workers` processes when more than one is asked for. With a vision-language model's
    `family`, each `<image>` becomes that image's tokens first; rows whose image tokens cutoff_len would cut
    are dropped and counted (an image's tokens must all be there for its pixels to fit)."""
    images = [c.images for c in conversations]
    if family is None:
        refuse_images(conversations)
    elif any(images):
        conversations = [family.expand(c) for c in conversations]
    template = chat_template_for(tokenizer, args.template, **template_options(args))
    specials = [t for t in tokenizer.all_special_tokens if t]
    if family is not None:  # image tokens in prompts are the expansion's own
        visual = set(tokenizer.convert_ids_to_tokens(sorted(family.visual_token_ids)))
        specials = [t for t in specials if t not in visual]
    chunks = [conversations[i : i + CHUNK] for i in range(0, len(conversations), CHUNK)]
    workers = min(args.preprocessing_num_workers or 1, len(chunks))
    if workers > 1:
        import multiprocessing

        # fork needs no `if __name__ == "__main__"` guard in the user's script; spawn where fork is missing
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            parts = pool.map(_tokenize_in_worker, [(c, args, tokenizer, template) for c in chunks])
    else:
        parts = _tokenize_pipelined(chunks, args, tokenizer, template)
    data = SFTData(train=[])
    for conversation, example, row_images in zip(
        conversations, (e for part in parts for e in part), images, strict=True
    ):
        data.truncated += example.truncated
        if family is not None and row_images:
            if not keep_image_tokens(example, conversation, family):
                data.dropped_cut_images.append(example.source)
                continue
            example.images = row_images
        if special_tokens_in_prompts(conversation, specials):
            data.special_token_rows.append(conversation.source)
        if example.trainable_tokens == 0:
            data.dropped_no_target.append(example.source)
            continue
        data.train.append(example)
    return data


def keep_image_tokens(example: TokenizedExample, expanded: Conversation, family: VisionFamily) -> bool:
    """Whether every media token (image, video, audio) of the row survived truncation; their labels are never
    trained on."""
    text = "".join(m.content for m in expanded.messages) + (expanded.system or "")
    if family.image_count(example.input_ids) != family.media_token_count(text):
        return False
    visual = family.visual_token_ids
    example.labels = [
        IGNORE_INDEX if i in visual else label
        for i, label in zip(example.input_ids, example.labels, strict=True)
    ]
    return True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cycle collector while building many acyclic lists (rows, token ids, labels).

    Collections triggered by those allocations walk every live list of token ids again and again; on
    50,000 rows they cost about a fifth of the preprocessing time. Nothing built here forms a cycle.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_sft_data(
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 42,
    stage: str = "sft",
    family: VisionFamily | None = None,
) -> SFTData:
    """Tokenize every conversation; rows whose answer is cut away entirely are dropped and counted, never trained on.

    With `stage: pt`, plain-text rows become token blocks with every token trained on (chat rows are
    rendered with their template and trained on whole). The result is cached (see
    `tuneforge.data.cache`); `overwrite_cache` tokenizes again.
    """
    from tuneforge.data import cache

    template = chat_template_for(tokenizer, args.template, **template_options(args))
    images = family.describe() if family is not None else ""
    key = cache.cache_key(args, tokenizer, template_fingerprint(template), seed, stage, images)
    with gc_paused():
        data = None if args.overwrite_cache else cache.load(key)
        if data is not None:
            info(f"using tokenized data cached in {cache.cache_dir(key)}")
        else:
            loaded = load_examples(args, args.on_bad_rows, seed)
            if stage == "pt":
                data = tokenize_for_pretraining(loaded.examples, args, tokenizer)
            else:
                data = tokenize_conversations(conversations_only(loaded), args, tokenizer, family)
            data.skipped = loaded.problems
            data.train = TokenTable.from_examples(data.train)
            if data.train:
                cache.save(data, key)
    _warn(data, args)
    mismatch = template_mismatch(tokenizer, args.template)
    if mismatch:
        warn(f"{mismatch}")
    if not data.train:
        raise DataError(
            f"no row has a trainable token within cutoff_len={args.cutoff_len}; raise cutoff_len", "empty"
        )
    if args.val_size > 0:
        data.train, data.eval = split_validation(data.train, args.val_size, seed)
    return data


def tokenize_for_pretraining(
    examples: list[Conversation | Document], args: DataArguments, tokenizer: PreTrainedTokenizerBase
) -> SFTData:
    """Each text (+ EOS, so documents stay apart when packed) cut into cutoff_len blocks; nothing is thrown away."""
    documents = [e for e in examples if isinstance(e, Document)]
    chats = [e for e in examples if isinstance(e, Conversation)]
    data = SFTData(train=[])
    if chats:  # chat rows in a pretraining mix: their rendered text, every token trained on
        whole = tokenize_conversations(chats, args.model_copy(update={"train_on_prompt": True}), tokenizer)
        data.train.extend(whole.train)
        data.truncated += whole.truncated
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    size = args.cutoff_len
    for start in range(0, len(documents), CHUNK):
        chunk = documents[start : start + CHUNK]
        encoded = tokenizer([d.text for d in chunk], add_special_tokens=False)["input_ids"]
        for document, ids in zip(chunk, encoded, strict=True):
            ids = ids + eos
            for i in range(0, len(ids), size):
                block = ids[i : i + size]
                data.train.append(TokenizedExample(block, list(block), document.source))
    return data


def split_validation(
    examples: Sequence[TokenizedExample], val_size: float, seed: int
) -> tuple[Sequence[TokenizedExample], Sequence[TokenizedExample]]:
    count = int(val_size) if val_size >= 1 else max(1, round(len(examples) * val_size))
    if count >= len(examples):
        raise DataError(f"val_size={val_size} leaves no training rows out of {len(examples)}", "config")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    if isinstance(examples, TokenTable):
        return examples.take(i for i in range(len(examples)) if i not in held), examples.take(sorted(held))
    return [e for i, e in enumerate(examples) if i not in held], [
        e for i, e in enumerate(examples) if i in held
    ]


def _warn(data: SFTData, args: DataArguments) -> None:
    def say(text: str) -> None:
        warn(f"{text}")

    if data.skipped:
        say(f"skipped {len(data.skipped)} bad rows (on_bad_rows: skip); first: {data.skipped[0].message}")
    if data.dropped_no_target:
        say(
            f"{len(data.dropped_no_target)} rows have no answer token within cutoff_len={args.cutoff_len} and are "
            f"skipped (first: {', '.join(data.dropped_no_target[:3])})"
        )
    if data.dropped_cut_images:
        say(
            f"{len(data.dropped_cut_images)} rows are skipped because cutoff_len={args.cutoff_len} would cut through "
            f"their image tokens (first: {', '.join(data.dropped_cut_images[:3])}); raise cutoff_len or lower "
            "image_max_pixels"
        )
    if data.special_token_rows:
        say(
            f"{len(data.special_token_rows)} rows contain special tokens such as the end-of-turn marker as plain "
            f"text in a prompt (first: {data.special_token_rows[0]}); they are tokenized as control tokens"
        )
