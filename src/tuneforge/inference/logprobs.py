"""Log-probabilities of the tokens a request read (its prompt) and chose, as the engine reports them.

Values are the model's own distribution (log-softmax of the logits, before temperature, top-p and
penalties), as vLLM reports by default; each entry also lists the k most probable tokens, best first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.inference.requests import Request, TokenLogprob

if TYPE_CHECKING:
    import torch


def prompt_logprobs(logits: torch.Tensor, requests: list[Request]) -> list[list[TokenLogprob | None] | None]:
    """Per request that asked (None for the others): one entry per prompt token, None for the first.

    `logits` `[batch, seq, vocab]` come from a left-padded prefill, so a prompt of n tokens fills the
    last n positions and position p predicts token p + 1.
    """
    import torch

    out: list[list[TokenLogprob | None] | None] = []
    for i, request in enumerate(requests):
        if not request.prompt_logprobs:
            out.append(None)
            continue
        ids = request.prompt_ids
        scores = logits[i, logits.shape[1] - len(ids) : -1].float().log_softmax(-1)
        targets = torch.tensor(ids[1:], device=scores.device)
        out.append([None, *entries_for(scores, targets, request.logprobs or 0)])
    return out


def chosen_logprobs(
    logits: torch.Tensor, requests: list[Request], chosen: list[int | None], stop_ids: set[int]
) -> list[TokenLogprob | None]:
    """The entry of each request's chosen token `chosen[i]` under `logits` `[batch, vocab]`, for requests
    that asked for logprobs (None elsewhere, and where nothing was chosen)."""
    import torch

    wanted = [i for i, r in enumerate(requests) if r.logprobs is not None and chosen[i] is not None]
    out: list[TokenLogprob | None] = [None] * len(requests)
    if not wanted:
        return out
    scores = logits[wanted].float().log_softmax(-1)
    targets = torch.tensor([chosen[i] for i in wanted], device=scores.device)
    k = max(requests[i].logprobs or 0 for i in wanted)
    for i, entry in zip(wanted, entries_for(scores, targets, k), strict=True):
        entry.top = entry.top[: requests[i].logprobs or 0]
        entry.stop = entry.token in stop_ids
        out[i] = entry
    return out


def entries_for(scores: torch.Tensor, targets: torch.Tensor, k: int) -> list[TokenLogprob]:
    """Entries for `targets` `[n]` under log-probabilities `scores` `[n, vocab]`, each with its k best."""
    chosen = scores.gather(-1, targets[:, None])[:, 0].tolist()
    if not k:
        return [TokenLogprob(int(t), chosen[n]) for n, t in enumerate(targets.tolist())]
    best_p, best_i = scores.topk(min(k, scores.shape[-1]), dim=-1)
    return [
        TokenLogprob(int(t), chosen[n], list(zip(best_i[n].tolist(), best_p[n].tolist(), strict=True)))
        for n, t in enumerate(targets.tolist())
    ]
