"""Shortening a tokenized conversation to `cutoff_len`: LLaMA-Factory's proportional policy, or cut at the end.

Proportional (the default, as LLaMA-Factory does it): the conversation is split into turns, each a prompt
(everything before an answer) and a target (the answer and what follows it up to the next prompt). Turn by
turn, in order, each gets a share of what is left of the budget:

    target * 2 < budget              -> the target may use the whole budget
    else if prompt * 2 < budget      -> the target gets budget - prompt
    else                             -> the target gets budget * target / (prompt + target)  (floored)
    target' = min(target, that share);  prompt' = min(prompt, budget - target')

and both keep their beginning. So a long answer keeps its start and its prompt instead of the row losing
every answer token, and rows that fit are untouched. `end` cuts the token list at cutoff_len.
"""

from __future__ import annotations

from typing import Literal

Truncation = Literal["proportional", "end"]


def infer_seqlen(prompt_len: int, target_len: int, budget: int) -> tuple[int, int]:
    """(prompt tokens kept, target tokens kept) for one turn within `budget` tokens."""
    if target_len * 2 < budget:
        share = budget
    elif prompt_len * 2 < budget:
        share = budget - prompt_len
    else:
        share = int(budget * (target_len / (prompt_len + target_len)))
    kept_target = min(share, target_len)
    kept_prompt = min(max(budget - kept_target, 0), prompt_len)
    return kept_prompt, kept_target


def turn_pieces(length: int, spans: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Token ranges `[(prompt), (target)]` per turn: a prompt runs from the end of the previous target to
    the answer's start, a target from the answer's start to the next prompt (the last one to the end)."""
    spans = sorted((a, b) for a, b in spans if a < b)
    if not spans:
        return [((0, length), (length, length))]
    pieces = []
    start = 0
    for i, (a, b) in enumerate(spans):
        end = b if i + 1 < len(spans) else length
        pieces.append(((start, a), (a, end)))
        start = end
    return pieces


def truncate_turns(
    ids: list[int], labels: list[int], spans: list[tuple[int, int]], cutoff_len: int
) -> tuple[list[int], list[int]]:
    """`ids` and `labels` (both `[seq]`) shortened to at most `cutoff_len` by the proportional policy."""
    kept: list[tuple[int, int]] = []
    used = 0
    for (p0, p1), (t0, t1) in turn_pieces(len(ids), spans):
        if used >= cutoff_len:
            break
        keep_prompt, keep_target = infer_seqlen(p1 - p0, t1 - t0, cutoff_len - used)
        kept += [(p0, p0 + keep_prompt), (t0, t0 + keep_target)]
        used += keep_prompt + keep_target
    new_ids = [token for a, b in kept for token in ids[a:b]]
    new_labels = [label for a, b in kept for label in labels[a:b]]
    return new_ids, new_labels
