"""Choosing the next token for a batch of requests, each with its own sampling settings.

One request may decode greedily while its neighbour in the batch samples at temperature 0.7 with
top_p 0.9 and its own seed: settings are per row, applied to a `[batch, vocab]` logits tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class SamplingParams:
    """How one request is decoded. temperature 0 (or do_sample False) means greedy."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def problems(self) -> list[str]:
        """What the sampler cannot use, each with its bound (empty when every value is usable)."""
        out = []
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= 100):
            out.append(
                f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE} and 100 (got {self.temperature})"
            )
        if not 0 < self.top_p <= 1:
            out.append(f"top_p must be in (0, 1] (got {self.top_p})")
        if not 0 <= self.top_k <= MAX_TOP_K:
            out.append(f"top_k must be between 0 (all tokens) and {MAX_TOP_K} (got {self.top_k})")
        if not MIN_PENALTY <= self.repetition_penalty <= MAX_PENALTY:
            out.append(
                f"repetition_penalty must be between {MIN_PENALTY} and {MAX_PENALTY} (got {self.repetition_penalty})"
            )
        if self.seed is not None and not 0 <= self.seed < 2**63:
            out.append(f"seed must be between 0 and 2**63 - 1 (got {self.seed})")
        if any(len(s) > MAX_STOP_CHARS for s in self.stop):
            out.append(f"each stop string may have at most {MAX_STOP_CHARS} characters")
        return out


# Beyond these the logits overflow to inf/nan (a 1e-40 temperature, a 1e-300 penalty) or torch rejects the value.
MIN_TEMPERATURE = 1e-3
MAX_TOP_K = 1_000_000
MIN_PENALTY, MAX_PENALTY = 0.01, 100.0
MAX_STOP_CHARS = 1000


def apply_repetition_penalty(logits: torch.Tensor, seen: list[list[int]], penalties: list[float]) -> None:
    """In place, per row: divide positive logits of tokens already seen by the penalty, multiply negative ones."""
    import torch

    for row, (tokens, penalty) in enumerate(zip(seen, penalties, strict=True)):
        if penalty == 1.0 or not tokens:
            continue
        index = torch.tensor(sorted(set(tokens)), device=logits.device)
        picked = logits[row, index]
        logits[row, index] = torch.where(picked > 0, picked / penalty, picked * penalty)


def filter_top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Logits `[batch, vocab]` with everything outside each row's top-k and nucleus set to -inf."""
    import torch

    ordered, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(logits.shape[-1], device=logits.device).expand_as(ordered)
    k = torch.tensor([k if k > 0 else logits.shape[-1] for k in top_k], device=logits.device)[:, None]
    drop = rank >= k
    probs = ordered.masked_fill(drop, float("-inf")).softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability mass strictly above each token
    p = torch.tensor(top_p, device=logits.device, dtype=probs.dtype)[:, None]
    drop |= before >= p
    drop[:, 0] = False  # the most likely token always stays
    return logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))


def next_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seen: list[list[int]],
    generators: list[torch.Generator | None],
) -> list[int]:
    """One token per row of `logits` `[batch, vocab]` (float32), following each row's settings."""
    import torch

    logits = logits.float().clone()
    apply_repetition_penalty(logits, seen, [p.repetition_penalty for p in params])
    greedy = [p.greedy for p in params]
    if all(greedy):
        return logits.argmax(dim=-1).tolist()
    temperature = torch.tensor([1.0 if p.greedy else p.temperature for p in params], device=logits.device)
    scaled = filter_top_k_top_p(
        logits / temperature[:, None], [p.top_k for p in params], [p.top_p for p in params]
    )
    probs = scaled.softmax(dim=-1)
    chosen = []
    for row, (is_greedy, generator) in enumerate(zip(greedy, generators, strict=True)):
        if is_greedy:
            chosen.append(int(logits[row].argmax()))
        else:
            chosen.append(int(torch.multinomial(probs[row], 1, generator=generator)))
    return chosen


def next_tokens_or_errors(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seen: list[list[int]],
    generators: list[torch.Generator | None],
) -> list[int | Exception]:
    """`next_tokens`, or, when the batch cannot be sampled, row by row: a row that fails gets its exception
    in place of a token, so one bad row does not end its neighbours."""
    try:
        return list(next_tokens(logits, params, seen, generators))
    except Exception:
        out: list[int | Exception] = []
        for i in range(len(params)):
            try:
                out += next_tokens(
                    logits[i : i + 1], params[i : i + 1], seen[i : i + 1], generators[i : i + 1]
                )
            except Exception as err:
                out.append(err)
        return out


def fresh_seed() -> int:
    """A seed for a request that gave none (from the OS, so parallel servers never share one)."""
    import random

    return random.SystemRandom().randrange(2**63)
