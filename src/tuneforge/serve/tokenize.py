"""Prompts as token ids, and vLLM's tokenizer endpoints (`/tokenize`, `/detokenize`, `/tokenizer_info`),
which evaluation harnesses (lm-evaluation-harness's remote tokenizer) use instead of a local tokenizer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tuneforge.inference.engine import InferenceEngine
from tuneforge.serve.errors import ApiError
from tuneforge.serve.protocol import DetokenizeRequest, TokenizeRequest, conversation


def vocab_size(engine: InferenceEngine) -> int:
    """How many token ids the model can read (its embedding rows)."""
    return int(engine.model.get_input_embeddings().num_embeddings)


def prompt_ids(
    engine: InferenceEngine, prompt: str | list[str] | list[int] | list[list[int]]
) -> tuple[list[list[int]], list[str]]:
    """Each prompt of a completions call as ids (texts tokenized with the model's special tokens, as
    vLLM does) and as text (given texts unchanged, ids decoded), for echo."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise ApiError(400, "prompt is empty.", "invalid_prompt", "prompt")
    if all(isinstance(x, int) for x in prompt):
        prompt = [prompt]  # one prompt given as ids
    size = vocab_size(engine)
    ids, texts = [], []
    for n, one in enumerate(prompt):
        where = f"prompt[{n}]" if len(prompt) > 1 else "prompt"
        if isinstance(one, str):
            tokens = engine.tokenizer(one, add_special_tokens=True)["input_ids"]
            text = one
        else:
            wrong = [t for t in one if not 0 <= t < size]
            if wrong:
                raise ApiError(
                    400,
                    f"{where}: token id {wrong[0]} is outside this model's vocabulary (0..{size - 1}).",
                    "invalid_prompt",
                    "prompt",
                )
            tokens, text = list(one), engine.tokenizer.decode(one)
        if not tokens:
            raise ApiError(400, f"{where} is empty.", "invalid_prompt", "prompt")
        ids.append(tokens)
        texts.append(text)
    return ids, texts


def tokenizer_routes(engine: InferenceEngine, allow_control_tokens: bool) -> APIRouter:
    router = APIRouter()
    tokenizer = engine.tokenizer

    @router.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        """A text's ids, or chat messages' prompt ids exactly as a chat completion would render them."""
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "Send either prompt or messages.", "invalid_request", "prompt")
        if body.messages is not None:
            system, turns = conversation(body.messages)
            try:
                ids = engine.render(turns, system, None, not allow_control_tokens)
            except Exception as err:
                raise ApiError(
                    400, f"Cannot render these messages: {err}", "invalid_messages", "messages"
                ) from None
        else:
            ids = tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
        return {
            "count": len(ids),
            "max_model_len": engine.context_length,
            "tokens": ids,
            "token_strs": tokenizer.convert_ids_to_tokens(ids),
        }

    @router.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        size = vocab_size(engine)
        wrong = [t for t in body.tokens if not 0 <= t < size]
        if wrong:
            raise ApiError(
                400,
                f"token id {wrong[0]} is outside this model's vocabulary (0..{size - 1}).",
                "invalid_request",
                "tokens",
            )
        return {"prompt": tokenizer.decode(body.tokens)}

    @router.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        """The special tokens, the context length and the chat template the server renders with."""
        return {
            "tokenizer_class": type(tokenizer).__name__,
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "unk_token": tokenizer.unk_token,
            "model_max_length": engine.context_length,
            "chat_template": served_chat_template(engine),
        }

    return router


def served_chat_template(engine: InferenceEngine) -> str | None:
    """The served template as Jinja (what exports write), else the tokenizer's own."""
    from tuneforge.export.chat_format import NotTranslatable, chat_pieces, jinja_template

    try:
        return jinja_template(chat_pieces(engine.template, engine.tokenizer))
    except NotTranslatable:
        return getattr(engine.tokenizer, "chat_template", None)
