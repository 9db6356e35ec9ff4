"""Reinforcement learning from rewards: GRPO (group-relative policy optimisation, Shao et al. 2024) and its
loss family (`grpo_loss_type`: grpo, bnpo, dapo, dr_grpo, gspo; tuneforge/train/grpo_losses/).

For each prompt the policy samples `num_generations` answers; each answer's advantage is its (weighted,
summed) reward minus the group's mean, divided by the group's or the batch's standard deviation
(`scale_rewards`), so no value model is needed. The loss is PPO's clipped surrogate with the importance
ratio against the policy that sampled (`epsilon`, `epsilon_high`), plus a per-token KL penalty towards the
reference (adapters off; k3 estimator). With `num_iterations` > 1 each batch of rollouts is reused for that
many optimizer steps (the sampler repeats the batch; the ratios then move away from 1 and clipping acts).
Truncated answers (`mask_truncated_completions`) and groups whose rewards do not vary
(`grpo_dynamic_sampling`, DAPO's filter: dropped rather than resampled) are left out of the loss.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.data.collator import pad_rows
from tuneforge.data.preference import batch_from_pieces
from tuneforge.train.grpo_losses import RolloutTokens, grpo_loss
from tuneforge.train.preference import _PerExampleLoss, token_logps
from tuneforge.train.rewards import RewardFunc, score_completions


def group_advantages(rewards: torch.Tensor, group: int, scale: str = "group") -> torch.Tensor:
    """`[n]` rewards in consecutive groups of `group` -> r - group mean, divided by the group's sample std
    (`scale="group"`), the whole batch's (`"batch"`), or nothing (`"none"`, Dr. GRPO); + 1e-4 against 0."""
    grouped = rewards.view(-1, group)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale == "none":
        return centred.view(-1)
    if scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else torch.ones(())
    else:
        std = grouped.std(-1, keepdim=True) if group > 1 else torch.ones_like(grouped[:, :1])
    return (centred / (std + 1e-4)).view(-1)


@dataclass
class Rollout:
    """One batch's sampled answers and what the loss needs of them, kept for `num_iterations` uses."""

    batch: dict[str, torch.Tensor]
    completions: list[list[int]]
    rewards: torch.Tensor
    advantages: torch.Tensor
    counted: torch.Tensor
    ref_logps: torch.Tensor | None
    old_logps: torch.Tensor | None = None  # the sampling policy's, taken on first use
    uses: int = 0


class RepeatedBatches(torch.utils.data.Sampler):
    """Each block of `block` indices of `base` (one optimizer step's rows over all processes) `times` times
    in a row, so a rollout is reused for `times` consecutive steps."""

    def __init__(self, base: Any, block: int, times: int):
        self.base, self.block, self.times = base, block, times

    def __iter__(self) -> Iterator[int]:
        chunk: list[int] = []
        for index in self.base:
            chunk.append(index)
            if len(chunk) == self.block:
                for _ in range(self.times):
                    yield from chunk
                chunk = []
        for _ in range(self.times if chunk else 0):
            yield from chunk

    def __len__(self) -> int:
        return len(self.base) * self.times

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


class GRPOTrainer(_PerExampleLoss):
    def __init__(
        self,
        *args: Any,
        reward_funcs: list[RewardFunc],
        loss_args: Any,
        reward_weights: list[float] | None = None,
        num_generations: int = 4,
        max_completion_length: int = 128,
        temperature: float = 1.0,
        rollout_backend: str = "engine",
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.rollout_backend = rollout_backend
        self.reward_funcs = reward_funcs
        self.reward_weights = reward_weights
        self.loss_args = loss_args  # grpo_loss_type, epsilon(_high), grpo_beta, scale_rewards, ...
        self.num_generations = num_generations
        self.max_completion_length = max_completion_length
        self.temperature = temperature
        self.rollouts: dict[tuple, Rollout] = {}

    def train_sampler(self, base: Any) -> Any:
        times = self.loss_args.num_iterations
        if base is None or times == 1:
            return base
        a = self.args
        return RepeatedBatches(
            base, a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size, times
        )

    def training_loss(self, model: torch.nn.Module, inputs: dict[str, Any], num_items: Any) -> torch.Tensor:
        rollout = self.rollout(model, inputs)
        if model.training:
            self.tokens_seen += int(rollout.batch["attention_mask"].sum())
        policy, rows = token_logps(model, rollout.batch, chunked=self.chunked)
        if rollout.old_logps is None:  # first use: the policy that sampled is this one
            rollout.old_logps = policy.detach()
        tokens = RolloutTokens(
            policy, rollout.old_logps, rollout.ref_logps, rows, rollout.advantages.to(policy.device),
            rollout.counted.to(policy.device),
        )  # fmt: skip
        loss = grpo_loss(self.loss_args.grpo_loss_type, tokens, self.loss_args)
        group = self.num_generations
        completions = rollout.completions
        self.record(
            model,
            reward=rollout.rewards.mean(),
            reward_std=rollout.rewards.view(-1, group).std(-1).mean() if group > 1 else 0.0,
            kl=k3_mean(policy, rollout.ref_logps),
            completion_length=float(sum(len(c) for c in completions)) / len(completions),
            counted=rollout.counted.float().mean(),
            clipped=clipped_share(policy - rollout.old_logps, tokens, self.loss_args),
        )
        return loss

    def rollout(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Rollout:
        """This batch's rollout: new on its first step, the kept one for the next num_iterations - 1."""
        key = tuple(tuple(p) for p in inputs["prompt_ids"]) + (model.training,)
        kept = self.rollouts.get(key)
        if kept is None:
            kept = self.rollouts[key] = self.new_rollout(model, inputs)
        kept.uses += 1
        if kept.uses >= self.loss_args.num_iterations or not model.training:
            del self.rollouts[key]
        return kept

    def new_rollout(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Rollout:
        args, group = self.loss_args, self.num_generations
        prompts: list[list[int]] = inputs["prompt_ids"]
        completions = self.sample(model, prompts)
        repeated = [p for p in prompts for _ in range(group)]
        answers = [a for a in inputs["answer"] for _ in range(group)]
        tokenizer = self.processing_class
        rewards = score_completions(
            self.reward_funcs, tokenizer, repeated, completions, answers, weights=self.reward_weights
        )
        counted = torch.ones(len(completions), dtype=torch.bool)
        if args.mask_truncated_completions:  # no EOS: cut at max_completion_length
            counted &= torch.tensor([c[-1] == tokenizer.eos_token_id for c in completions])
        if args.grpo_dynamic_sampling and group > 1:
            varies = rewards.view(-1, group).std(-1) > 0
            counted &= varies.repeat_interleave(group)
        self.record_samples(
            model, shown_samples(tokenizer, repeated[:group], completions[:group], rewards[:group])
        )
        batch = batch_from_pieces(repeated, completions, tokenizer.pad_token_id)
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        ref_logps = None
        if args.grpo_beta > 0:
            with self.reference(model) as ref:
                ref_logps, _ = token_logps(ref, batch, chunked=self.chunked)
        return Rollout(
            batch,
            completions,
            rewards,
            group_advantages(rewards, group, args.scale_rewards),
            counted,
            ref_logps,
        )

    def sample(self, model: torch.nn.Module, prompts: list[list[int]]) -> list[list[int]]:
        inner = self.accelerator.unwrap_model(model)
        return rollout(
            self, inner, prompts, self.num_generations, self.max_completion_length, self.temperature
        )


def shown_samples(
    tokenizer: Any, prompts: list[list[int]], completions: list[list[int]], rewards: Any, **extra: list[Any]
) -> list[dict[str, Any]]:
    """Sampled answers as text for samples.jsonl: prompt, completion, reward (and any `extra` column)."""
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        row = {
            "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
            "completion": tokenizer.decode(completion, skip_special_tokens=True),
            "reward": round(float(rewards[i]), 4),
        }
        rows.append(row | {k: v[i] for k, v in extra.items()})
    return rows


def k3_mean(policy: torch.Tensor, reference: torch.Tensor | None) -> float:
    from tuneforge.train.losses import k3_kl

    return 0.0 if reference is None else float(k3_kl(policy.detach(), reference).mean())


def clipped_share(log_ratio: torch.Tensor, tokens: RolloutTokens, args: Any) -> float:
    """The share of tokens whose ratio lies outside the clip range on the side their advantage pushes."""
    ratio = torch.exp(log_ratio.detach())
    high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    advantage = tokens.advantages[tokens.rows]
    clipped = ((ratio > 1 + high) & (advantage > 0)) | ((ratio < 1 - args.epsilon) & (advantage < 0))
    return float(clipped.float().mean()) if clipped.numel() else 0.0


def rollout(
    trainer: Any,
    model: torch.nn.Module,
    prompts: list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
) -> list[list[int]]:
    """`sample_answers` with the trainer's `rollout_backend`, timed into its rollout metrics."""
    start = time.perf_counter()
    answers = sample_answers(
        model, trainer.processing_class, prompts, n, max_new_tokens, temperature, trainer.rollout_backend
    )
    trainer.generated(time.perf_counter() - start, sum(len(a) for a in answers))
    return answers


def sample_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
    backend: str = "engine",
) -> list[list[int]]:
    """`n` sampled answers per prompt (token ids, up to and including the first EOS), prompt-major order:
    through the inference engine's decoding core (`engine`: finished rows leave the batch) or
    `model.generate` (`transformers`)."""
    if backend == "engine":
        from tuneforge.inference.rollouts import sample_rollouts

        return sample_rollouts(
            model, prompts, n, max_new_tokens, temperature, tokenizer.pad_token_id, tokenizer.eos_token_id
        )
    return generate_answers(model, tokenizer, prompts, n, max_new_tokens, temperature)


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    n: int,
    max_new_tokens: int,
    temperature: float,
) -> list[list[int]]:
    """`sample_answers` through transformers' `model.generate`."""
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
