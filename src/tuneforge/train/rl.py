"""Reinforcement learning from rewards: GRPO (group-relative policy optimisation, Shao et al. 2024).

For each prompt the policy samples `num_generations` answers; each answer's advantage is its reward
minus the group's mean, divided by the group's standard deviation, so no value model is needed.
The loss raises the log-probability of answers with positive advantage, lowers the others, and
keeps the policy near the reference (adapters off) with a per-token KL penalty (k3 estimator).
One optimisation pass per batch of samples, so the PPO ratio is 1 and its clipping inactive.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.data.collator import pad_rows
from tuneforge.data.preference import batch_from_pieces
from tuneforge.train.preference import _PerExampleLoss, token_logps
from tuneforge.train.rewards import RewardFunc, score_completions


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """`[n]` rewards in consecutive groups of `group` -> (r - group mean) / (group std + 1e-4)."""
    grouped = rewards.view(-1, group)
    mean, std = (
        grouped.mean(-1, keepdim=True),
        grouped.std(-1, keepdim=True) if group > 1 else torch.ones_like(grouped[:, :1]),
    )
    return ((grouped - mean) / (std + 1e-4)).view(-1)


def grpo_token_loss(
    policy: torch.Tensor, reference: torch.Tensor, advantages: torch.Tensor, rows: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean KL): per token -exp(lp - sg(lp)) A + beta (exp(ref - lp) - (ref - lp) - 1), averaged per
    sequence, then over sequences. All inputs are per labelled token `[n]` except `advantages` `[rows]`."""
    ratio = torch.exp(policy - policy.detach())
    delta = reference - policy
    kl = torch.exp(delta) - delta - 1
    per_token = -ratio * advantages[rows] + beta * kl
    size = advantages.shape[0]
    sums = torch.zeros(size, device=policy.device).index_add(0, rows, per_token)
    counts = torch.zeros(size, device=policy.device).index_add(0, rows, torch.ones_like(per_token))
    return (sums / counts.clamp(min=1)).mean(), kl.detach().mean()


class GRPOTrainer(_PerExampleLoss):
    def __init__(
        self,
        *args: Any,
        reward_funcs: list[RewardFunc],
        num_generations: int = 4,
        max_completion_length: int = 128,
        temperature: float = 1.0,
        beta: float = 0.04,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.reward_funcs = reward_funcs
        self.num_generations = num_generations
        self.max_completion_length = max_completion_length
        self.temperature = temperature
        self.beta = beta

    def training_loss(self, model: torch.nn.Module, inputs: dict[str, Any], num_items: Any) -> torch.Tensor:
        prompts: list[list[int]] = inputs["prompt_ids"]
        completions = self.sample(model, prompts)
        group = self.num_generations
        repeated = [p for p in prompts for _ in range(group)]
        answers = [a for a in inputs["answer"] for _ in range(group)]
        rewards = score_completions(self.reward_funcs, self.processing_class, repeated, completions, answers)
        advantages = group_advantages(rewards, group)
        batch = batch_from_pieces(repeated, completions, self.processing_class.pad_token_id)
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        if model.training:
            self.tokens_seen += int(batch["attention_mask"].sum())
        policy, rows = token_logps(model, batch)
        if self.beta > 0:
            with self.reference(model) as ref:
                reference, _ = token_logps(ref, batch)
        else:  # no KL term: skip the reference pass
            reference = policy.detach()
        loss, kl = grpo_token_loss(policy, reference, advantages.to(policy.device), rows, self.beta)
        self.record(
            model,
            reward=rewards.mean(),
            reward_std=rewards.view(-1, group).std(-1).mean() if group > 1 else 0.0,
            kl=kl,
            completion_length=float(sum(len(c) for c in completions)) / len(completions),
        )
        return loss

    def sample(self, model: torch.nn.Module, prompts: list[list[int]]) -> list[list[int]]:
        inner = self.accelerator.unwrap_model(model)
        return sample_answers(
            inner,
            self.processing_class,
            prompts,
            self.num_generations,
            self.max_completion_length,
            self.temperature,
        )


@torch.no_grad()
def sample_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
) -> list[list[int]]:
    """`n` sampled answers per prompt (token ids, up to and including the first EOS), prompt-major order."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids = pad_rows(prompts, pad, left=True)  # left padding for generation
    mask = pad_rows([[1] * len(p) for p in prompts], 0, left=True)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=True,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    finally:
        model.train(was_training)
    answers = []
    for row in out[:, ids.shape[1] :].tolist():
        if eos in row:
            row = row[: row.index(eos) + 1]
        answers.append(row or [eos])
    return answers
