"""Trainers of the alignment stages that learn from preferences: reward model, DPO (and variants), KTO.

Each is `TuneforgeTrainer` (checkpoints, numerics guard, metrics.jsonl) with its own
`training_loss`. Sequence log-probabilities run the output head on answer tokens only, like SFT.
The reference policy is the same model with its adapters switched off (no second copy in memory)
unless a separate reference model is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from tuneforge.data.collator import MERGEABLE_KEYS, merge_batches
from tuneforge.train.losses import kto_loss, ranking_loss
from tuneforge.train.pref_losses import PairLogps, preference_loss
from tuneforge.train.trainer import MODEL_INPUTS, TuneforgeTrainer, labelled_outputs


def token_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], prefix: str = "", chunked: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of every labelled token `[n]`, the row each belongs to `[n]`)."""
    return _token_logps(model, model_inputs(batch, prefix), chunked)


def _token_logps(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], chunked: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    out = labelled_outputs(model, inputs, chunked)
    return out.label_logps(), row_ids(inputs)[:, 1:][out.keep]


def model_inputs(batch: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    keys = (*MODEL_INPUTS, "labels")  # with a vision-language model's image tensors when the batch has them
    return {k: batch[f"{prefix}{k}"] for k in keys if f"{prefix}{k}" in batch}


def packed(inputs: dict[str, torch.Tensor]) -> bool:
    """Rows packed into one sequence (a merged window): restarting position ids and no attention mask."""
    return inputs["input_ids"].shape[0] == 1 and "position_ids" in inputs and "attention_mask" not in inputs


def row_ids(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """`[batch, seq]`: the row each position belongs to; packed rows count one by one, in order."""
    if packed(inputs):
        return (inputs["position_ids"] == 0).cumsum(-1) - 1
    ids = inputs["input_ids"]
    return torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)


def row_count(inputs: dict[str, torch.Tensor]) -> int:
    return int((inputs["position_ids"] == 0).sum()) if packed(inputs) else inputs["input_ids"].shape[0]


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], prefix: str = "", chunked: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed, length-averaged) log-probability of each row's labelled tokens: two `[rows]` tensors."""
    inputs = model_inputs(batch, prefix)
    logps, rows = _token_logps(model, inputs, chunked)
    size = row_count(inputs)
    sums = torch.zeros(size, device=logps.device).index_add(0, rows, logps)
    counts = torch.zeros(size, device=logps.device).index_add(0, rows, torch.ones_like(logps))
    return sums, sums / counts.clamp(min=1)


class _PerExampleLoss(TuneforgeTrainer):
    """Losses averaged per example in each micro-batch: the Trainer divides by accumulation steps."""

    divides_by_num_items = False

    def __init__(self, *args: Any, ref_model: torch.nn.Module | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.ref_model = ref_model

    @contextlib.contextmanager
    def reference(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The reference policy: `ref_model`, else this model with its adapters off; no gradients either way."""
        with torch.no_grad():
            if self.ref_model is not None:
                yield self.ref_model
            else:
                inner = self.accelerator.unwrap_model(model)
                with inner.disable_adapter():
                    yield model


class RewardTrainer(_PerExampleLoss):
    """Pairwise ranking: the chosen answer must score above the rejected one."""

    def training_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], num_items: Any
    ) -> torch.Tensor:
        scores = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        ).logits
        scores = scores.squeeze(-1).float()
        half = scores.shape[0] // 2
        chosen, rejected = scores[:half], scores[half:]
        self.record(model, accuracy=(chosen > rejected).float(), margin=(chosen - rejected).detach())
        return ranking_loss(chosen, rejected).mean()


class DPOTrainer(_PerExampleLoss):
    """DPO and its variants: `pref_loss` names the member of `tuneforge.train.pref_losses` that scores the pairs."""

    def __init__(self, *args: Any, finetuning: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.finetuning = finetuning
        self.objective = preference_loss(finetuning.pref_loss)

    # A window's pairs run as one packed sequence (merge_micro_batches), as SFT's rows do: every chosen row, then
    # every rejected row, each attending to itself only. The loss of a micro-batch is the mean over its pairs
    # (the Trainer divides by the window's micro-batches), so each pair's loss is weighted by 1 / its
    # micro-batch's pair count (`pair_shares`) and summed: the same loss and gradients.
    def merges_windows(self) -> bool:
        return True

    def merge_window(self, batches: list[dict[str, Any]]) -> dict[str, Any] | None:
        if any(set(b) - MERGEABLE_KEYS for b in batches):  # images, online DPO's pair weights
            return None
        chosen, rejected, shares, samples = [], [], [], []
        rows = ("input_ids", "attention_mask", "labels")
        for batch in batches:
            pairs = batch["input_ids"].shape[0] // 2
            chosen.append({k: batch[k][:pairs] for k in rows})
            rejected.append({k: batch[k][pairs:] for k in rows})
            shares.append(torch.full((pairs,), 1.0 / pairs))
            if "sample_ids" in batch:
                samples.append(batch["sample_ids"])
        merged = merge_batches(chosen + rejected, 2 * self.merge_budget)
        if merged is None:
            return None
        merged["pair_shares"] = torch.cat(shares)
        if samples:
            merged["sample_ids"] = torch.cat(samples)
        return merged

    def training_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], num_items: Any
    ) -> torch.Tensor:
        sums, avgs = sequence_logps(model, inputs, chunked=self.chunked)
        half = sums.shape[0] // 2
        logps = PairLogps(sums[:half], sums[half:], avgs[:half], avgs[half:])
        if self.objective.traits.get("reference"):
            with self.reference(model) as ref:
                ref_sums, _ = sequence_logps(ref, inputs, chunked=self.chunked)
            logps.ref_chosen, logps.ref_rejected = ref_sums[:half], ref_sums[half:]
        out = self.objective.target(logps, self.finetuning)
        weights = inputs.get("pair_weights")  # online DPO: 0 for pairs its judge could not tell apart
        shares = inputs.get("pair_shares")  # a merged window (above)
        if shares is not None:
            mean = lambda x: (x * shares.to(x.device)).sum()  # noqa: E731
        elif weights is not None:
            mean = lambda x: (x * weights).sum() / weights.sum().clamp(min=1)  # noqa: E731
        else:
            mean = lambda x: x.mean()  # noqa: E731
        loss = mean(out.loss)
        ftx = self.finetuning.pref_ftx
        if ftx > 0 and not self.objective.traits.get("own_nll"):  # ORPO has its own NLL term
            loss = loss + ftx * -mean(avgs[:half])
        self.record(
            model,
            **{
                "rewards/chosen": out.chosen_rewards,
                "rewards/rejected": out.rejected_rewards,
                "rewards/margins": out.chosen_rewards - out.rejected_rewards,
                "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float(),
                "logps/chosen": sums[:half].detach(),
                "logps/rejected": sums[half:].detach(),
            },
        )
        return loss


class KTOTrainer(_PerExampleLoss):
    """KTO on unpaired rows, with the KL reference point estimated on mismatched (prompt, answer) pairs."""

    def __init__(
        self,
        *args: Any,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.beta, self.desirable_weight, self.undesirable_weight = beta, desirable_weight, undesirable_weight

    def training_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], num_items: Any
    ) -> torch.Tensor:
        desirable = inputs["desirable"]
        policy, _ = sequence_logps(model, inputs, chunked=self.chunked)
        with torch.no_grad():
            policy_kl, _ = sequence_logps(model, inputs, "kl_", self.chunked)
        with self.reference(model) as ref:
            ref_logps, _ = sequence_logps(ref, inputs, chunked=self.chunked)
            ref_kl, _ = sequence_logps(ref, inputs, "kl_", self.chunked)
        kl = (policy_kl - ref_kl).mean()
        losses = kto_loss(
            policy, ref_logps, desirable, kl, self.beta, self.desirable_weight, self.undesirable_weight
        )
        rewards = (self.beta * (policy - ref_logps)).detach()
        good, bad = desirable.bool(), ~desirable.bool()
        stats: dict[str, Any] = {"kl": kl}
        if good.any():
            stats["rewards/chosen"] = rewards[good]
        if bad.any():
            stats["rewards/rejected"] = rewards[bad]
        self.record(model, **stats)
        return losses.mean()
