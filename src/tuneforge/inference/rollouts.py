"""Answers sampled for training (GRPO, PPO, online DPO) through the engine's decoding core: the policy as it is
in memory (its current adapter, no copy), the prompts' rows in one batch sharing one KV cache (`Batch`, the
structure `serve` decodes with), and a row leaving the batch the moment it samples the end token or reaches
`max_new_tokens`, so the rest of the batch does not carry it (`model.generate` runs every row until the last
one ends). Sampling is plain: temperature, the whole vocabulary (top_k 0, top_p 1), as the RL losses assume.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.inference.batch import Batch
from tuneforge.inference.loading import CACHE_ARGUMENT


@torch.no_grad()
def sample_rollouts(
    model: Any,
    prompts: list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
    pad_id: int,
    eos_id: int,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """`n` answers per prompt (token ids, up to and including the first `eos_id`), prompt-major order."""
    from transformers import DynamicCache

    rows = [p for p in prompts for _ in range(n)]
    answers: list[list[int]] = [[] for _ in rows]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        batch = Batch.start(list(range(len(rows))), rows, pad_id, DynamicCache(config=model.config))
        while batch.rows:
            logits = model(
                input_ids=batch.next_input.to(device),
                attention_mask=batch.mask.to(device),
                position_ids=batch.positions.to(device),
                use_cache=True,
                logits_to_keep=1,
                **{CACHE_ARGUMENT: batch.cache},
            ).logits[:, -1]
            probs = (logits.float() / temperature).softmax(dim=-1)
            chosen = torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()
            keep = []
            for i, (row, token) in enumerate(zip(batch.rows, chosen, strict=True)):
                answers[row].append(token)
                if token != eos_id and len(answers[row]) < max_new_tokens:
                    keep.append(i)
            batch.keep(keep)
            if keep:
                batch.advance([chosen[i] for i in keep])
    finally:
        model.train(was_training)
    return answers
