"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022), written for the current stack.

Model sharing, as the user's documents describe for LLaMA-Factory: one base model in memory holds
the policy (the trained LoRA adapter), the reference (adapters off), the reward model (a second,
frozen LoRA adapter with its scoring head, `reward_model_type: lora`) and the critic (a value head
on the policy's hidden states). A separate full reward model or Python reward functions work too.

Each rollout: sample one answer per prompt, score it, compute per-token rewards (score at the last
token, minus kl_coef x (log pi - log ref) at every token), values, GAE advantages and returns; then
`ppo_epochs` passes over `ppo_buffer_size` minibatches, one Trainer micro-step each, with the
clipped policy and value losses. The KL coefficient adapts towards `ppo_target` (or stays fixed).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.preference import batch_from_pieces
from tuneforge.train.rewards import score_completions
from tuneforge.train.rl import rollout, shown_samples
from tuneforge.train.trainer import TuneforgeTrainer, labelled_outputs

VALUE_HEAD = "value_head.safetensors"


# ---- the arithmetic, checked against hand computations in tests/train/test_ppo.py ----


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over one answer `[T]`: (advantages, returns = advantages + values)."""
    advantages = torch.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(rewards.shape[0])):
        following = values[t + 1] if t + 1 < rewards.shape[0] else 0.0
        delta = rewards[t] + gamma * following - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, advantages + values


def whiten(values: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean, var = values.mean(), values.var(unbiased=False)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def clipped_policy_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip: float
) -> torch.Tensor:
    """mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)), r = exp(log pi - log pi_old)."""
    ratio = torch.exp(logps - old_logps)
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float
) -> torch.Tensor:
    """0.5 mean over tokens of max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


class KLController:
    """Fixed, or adaptive (Ziegler et al.): coef *= 1 + clip(KL / target - 1, -0.2, 0.2) x n / horizon."""

    def __init__(self, coef: float, target: float | None, horizon: int = 10000):
        self.value, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.value *= 1 + error * n / self.horizon


# ---- the models ----


class PolicyWithValueHead(torch.nn.Module):
    """The LoRA policy and a value head (critic) reading its last hidden states."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy
        self.config = policy.config
        self.v_head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(self.v_head.weight)
        torch.nn.init.zeros_(self.v_head.bias)

    def outputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability, value) of every labelled token `[n]` each; the value is that of the state before it."""
        out = labelled_outputs(self.policy, {k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
        logps = out.label_logps()
        return logps, self.v_head(out.states).squeeze(-1).float()


class SharedRewardAdapter:
    """A reward model trained by `stage: rm` with LoRA, attached to the policy's base as adapter `reward`."""

    def __init__(self, policy: Any, path: str, pad_token_id: int):
        from peft import LoraConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        config = LoraConfig.from_pretrained(path)
        config.modules_to_save, config.task_type, config.inference_mode = None, "CAUSAL_LM", True
        weights = load_file(str(Path(path) / "adapter_model.safetensors"))
        score = [k for k in weights if k.endswith("score.weight")]
        if not score:
            raise ValueError(f"reward_model {path} has no scoring head; train it with stage: rm")
        self.head = weights.pop(score[0]).float()  # [1, hidden]
        policy.add_adapter("reward", config)
        set_peft_model_state_dict(policy, weights, adapter_name="reward")
        for name, param in policy.named_parameters():
            if ".reward." in name:
                param.requires_grad_(False)
        self.policy, self.pad_token_id = policy, pad_token_id

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        was_training = self.policy.training
        self.policy.eval()  # PEFT picks adapters per row only outside training mode
        try:
            out = self.policy(
                input_ids=ids,
                attention_mask=batch["attention_mask"],
                adapter_names=["reward"] * ids.shape[0],
                output_hidden_states=True,
                use_cache=False,
            )
        finally:
            self.policy.train(was_training)
        last = _last_non_pad(ids, self.pad_token_id)
        states = out.hidden_states[-1][torch.arange(ids.shape[0]), last].float()
        return states @ self.head.to(states.device).T[:, 0]


class FullRewardModel:
    """A full reward model (`reward_model_type: full`): its own weights, scoring with its own head."""

    def __init__(self, model: Any):
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]


def _last_non_pad(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """Where a sequence-classification head reads its score: the last token that is not padding."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    return (positions * (ids != pad)).argmax(-1)


# ---- the trainer ----


class PPOTrainer(TuneforgeTrainer):
    divides_by_num_items = False  # PPO's losses are batch means

    def __init__(
        self,
        *args: Any,
        reward: Any,
        ppo_epochs: int = 4,
        buffer_size: int = 1,
        kl: KLController | None = None,
        cliprange: float = 0.2,
        cliprange_value: float = 0.2,
        vf_coef: float = 0.1,
        gamma: float = 1.0,
        lam: float = 0.95,
        score_norm: bool = False,
        whiten_rewards: bool = False,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        rollout_backend: str = "engine",
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.rollout_backend = rollout_backend
        self.model_accepts_loss_kwargs = False
        self.reward, self.ppo_epochs, self.buffer_size = reward, ppo_epochs, buffer_size
        self.kl = kl or KLController(0.05, 6.0)
        self.cliprange, self.cliprange_value, self.vf_coef = cliprange, cliprange_value, vf_coef
        self.gamma, self.lam, self.score_norm, self.whiten_rewards = gamma, lam, score_norm, whiten_rewards
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.buffer: list[dict[str, Any]] = []
        self.score_stats = [0, 0.0, 0.0]  # count, mean, M2 (Welford) for ppo_score_norm

    def training_loss(self, model: torch.nn.Module, inputs: dict[str, Any], num_items: Any) -> torch.Tensor:
        wrapper = self.accelerator.unwrap_model(model)
        if not self.buffer:
            self.buffer = self.experience(wrapper, inputs)
        minibatch = self.buffer.pop(0)
        logps, values = wrapper.outputs(minibatch["batch"])
        policy_loss = clipped_policy_loss(
            logps, minibatch["old_logps"], minibatch["advantages"], self.cliprange
        )
        value_loss = clipped_value_loss(
            values, minibatch["old_values"], minibatch["returns"], self.cliprange_value
        )
        self.record(model, policy_loss=policy_loss.detach(), value_loss=value_loss.detach())
        return policy_loss + self.vf_coef * value_loss

    @torch.no_grad()
    def experience(self, wrapper: PolicyWithValueHead, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Roll out, score, and turn the batch into `ppo_epochs x buffer_size` minibatches of targets."""
        prompts = inputs["prompt_ids"]
        answers = rollout(self, wrapper.policy, prompts, 1, self.max_new_tokens, self.temperature)
        batch = {
            k: v.to(self.args.device)
            for k, v in batch_from_pieces(prompts, answers, self.processing_class.pad_token_id).items()
        }
        self.tokens_seen += int(batch["attention_mask"].sum())
        was_training = wrapper.training
        wrapper.eval()
        try:
            old_logps, old_values = wrapper.outputs(batch)
            with wrapper.policy.disable_adapter():
                ref_logps, _ = wrapper.outputs(batch)
        finally:
            wrapper.train(was_training)
        scores = self.score(prompts, answers, batch, inputs).to(old_logps.device)
        raw_scores = scores.clone()
        self.record_samples(wrapper, shown_samples(self.processing_class, prompts, answers, raw_scores))
        if self.score_norm:
            scores = self.normalise_scores(scores)
        lengths = [len(a) for a in answers]
        per_token_kl = old_logps - ref_logps
        rewards = -self.kl.value * per_token_kl
        ends = torch.tensor(lengths, device=rewards.device).cumsum(0) - 1
        rewards[ends] += scores
        if self.whiten_rewards:
            rewards = whiten(rewards, shift_mean=False)
        advantages, returns = [], []
        for piece_r, piece_v in zip(rewards.split(lengths), old_values.split(lengths), strict=True):
            a, r = gae(piece_r, piece_v, self.gamma, self.lam)
            advantages.append(a)
            returns.append(r)
        advantages_all = whiten(torch.cat(advantages))
        kl_per_answer = torch.stack([k.sum() for k in per_token_kl.split(lengths)]).mean()
        self.kl.update(float(kl_per_answer), len(prompts))
        self.record(
            wrapper,
            reward=raw_scores.mean(),
            kl=kl_per_answer,
            kl_coef=self.kl.value,
            answer_length=float(sum(lengths)) / len(lengths),
        )
        per_answer = {
            "old_logps": old_logps.split(lengths),
            "old_values": old_values.split(lengths),
            "advantages": advantages_all.split(lengths),
            "returns": torch.cat(returns).split(lengths),
        }
        return self._minibatches(prompts, answers, per_answer)

    def score(
        self,
        prompts: list[list[int]],
        answers: list[list[int]],
        batch: dict[str, Any],
        inputs: dict[str, Any],
    ) -> torch.Tensor:
        if not isinstance(self.reward, list):  # a reward model
            return self.reward(batch).float().cpu()
        return score_completions(self.reward, self.processing_class, prompts, answers, inputs["answer"])

    def normalise_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Running mean/std over every score seen so far (Welford), then standardise."""
        count, mean, m2 = self.score_stats
        for value in scores.tolist():
            count += 1
            delta = value - mean
            mean += delta / count
            m2 += delta * (value - mean)
        self.score_stats = [count, mean, m2]
        std = (m2 / max(count - 1, 1)) ** 0.5 if count > 1 else 1.0
        return (scores - mean) / (std + 1e-8)

    def _minibatches(
        self, prompts: list[list[int]], answers: list[list[int]], per_answer: dict[str, tuple]
    ) -> list[dict[str, Any]]:
        order = list(range(len(prompts)))
        size = max(1, -(-len(order) // self.buffer_size))
        shuffle = random.Random(self.state.global_step)
        out = []
        for _ in range(self.ppo_epochs):
            shuffle.shuffle(order)
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                batch = batch_from_pieces(
                    [prompts[i] for i in rows], [answers[i] for i in rows], self.processing_class.pad_token_id
                )
                item = {"batch": {k: v.to(self.args.device) for k, v in batch.items()}}
                item.update({k: torch.cat([v[i] for i in rows]) for k, v in per_answer.items()})
                out.append(item)
        return out

    # ---- saving and resuming: the policy adapter and the value head ----

    def save_weights(self, output_dir: str | None, state_dict: Any) -> None:
        from safetensors.torch import save_file

        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        wrapper = self.accelerator.unwrap_model(self.model)
        wrapper.policy.save_pretrained(str(out), selected_adapters=["default"])
        save_file(
            {k: v.detach().contiguous() for k, v in wrapper.v_head.state_dict().items()},
            str(out / VALUE_HEAD),
        )
        if self.processing_class is not None:
            self.processing_class.save_pretrained(str(out))

    def load_weights(self, resume_from_checkpoint: str, model: Any) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        wrapper = self.accelerator.unwrap_model(self.model)
        path = Path(resume_from_checkpoint)
        set_peft_model_state_dict(
            wrapper.policy, load_file(str(path / "adapter_model.safetensors")), adapter_name="default"
        )
        wrapper.v_head.load_state_dict(load_file(str(path / VALUE_HEAD)))
