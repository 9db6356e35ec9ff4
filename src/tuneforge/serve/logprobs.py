"""Log-probabilities in OpenAI's two shapes: the completions API's parallel lists (tokens, token_logprobs,
top_logprobs, text_offset) and chat's per-token objects (token, logprob, bytes, top_logprobs)."""

from __future__ import annotations

from typing import Any

from tuneforge.inference.requests import TokenLogprob

REPLACEMENT = "\ufffd"
WINDOW = 6  # tokens of left context decoded with each token, enough to complete any UTF-8 character


def token_pieces(tokenizer: Any, ids: list[int], skip_special_tokens: bool = False) -> list[str]:
    """Each token's share of the decoded text: the pieces join to `decode(ids)`, and a token that ends
    inside a multi-byte character gets "" (the character goes to the token that completes it).
    Linear: each token is decoded with a few tokens of left context, not the whole prefix."""

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=skip_special_tokens)

    pieces = []
    for i in range(len(ids)):
        start = max(0, i - WINDOW)
        before = decode(ids[start:i]).rstrip(REPLACEMENT)
        after = decode(ids[start : i + 1])
        if i < len(ids) - 1:
            after = after.rstrip(REPLACEMENT)
        pieces.append(after[len(before) :] if after.startswith(before) else "")
    return pieces


def _single(tokenizer: Any, ids: list[int]) -> list[str]:
    return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)


def _top(tokenizer: Any, entries: list[TokenLogprob | None]) -> list[list[tuple[str, float]]]:
    """Each entry's alternatives as (text, logprob), one batched decode for all of them."""
    flat = [t for e in entries if e is not None for t, _ in e.top]
    texts = iter(_single(tokenizer, flat))
    return [[(next(texts), p) for _, p in e.top] if e is not None else [] for e in entries]


def completion_logprobs(
    tokenizer: Any,
    prompt: list[int] | None,
    prompt_entries: list[TokenLogprob | None] | None,
    chosen: list[TokenLogprob],
    offset: int,
) -> dict[str, Any]:
    """The completions API's `logprobs` object: the echoed prompt's tokens first (when `prompt` is given;
    its first token has no logprob), then the chosen tokens (a stop token included, with its logprob, as
    vLLM does); `text_offset` counts characters from `offset`."""
    pieces: list[str] = []
    entries: list[TokenLogprob | None] = []
    if prompt is not None:
        pieces += token_pieces(tokenizer, prompt)
        entries += prompt_entries or [None] * len(prompt)
    answer = [e for e in chosen if not e.stop]
    pieces += token_pieces(tokenizer, [e.token for e in answer], skip_special_tokens=True)
    pieces += _single(tokenizer, [e.token for e in chosen if e.stop])
    entries += answer + [e for e in chosen if e.stop]
    offsets = []
    for piece in pieces:
        offsets.append(offset)
        offset += len(piece)
    tops = _top(tokenizer, entries)
    return {
        "tokens": pieces,
        "token_logprobs": [e.logprob if e is not None else None for e in entries],
        "top_logprobs": [dict(top) if e is not None else None for e, top in zip(entries, tops, strict=True)],
        "text_offset": offsets,
    }


def chat_logprobs(tokenizer: Any, chosen: list[TokenLogprob]) -> dict[str, Any]:
    """Chat's `logprobs` object for the answer's tokens (end-of-turn tokens are not part of the content)."""
    answer = [e for e in chosen if not e.stop]
    texts = _single(tokenizer, [e.token for e in answer])
    tops = _top(tokenizer, answer)

    def item(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = [
        {**item(text, e.logprob), "top_logprobs": [item(t, p) for t, p in top]}
        for e, text, top in zip(answer, texts, tops, strict=True)
    ]
    return {"content": content, "refusal": None}
