"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"): the pairs are not
in the data but sampled from the policy as it trains.

For each prompt the policy samples two answers (`max_completion_length`, `rollout_temperature`); the judge,
a trained reward model (`reward_model`) or the reward functions (`reward_funcs`), scores both; the higher one
is chosen and the DPO loss (`pref_loss`, `pref_beta`, reference: the model with its adapters off or
`ref_model`) is taken on the pair. Pairs the judge scores equal teach nothing and are left out of the loss
(weight 0), so a batch of ties moves no weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tuneforge.data.preference import batch_from_pieces
from tuneforge.train.preference import DPOTrainer
from tuneforge.train.rewards import score_completions
from tuneforge.train.rl import rollout, shown_samples


def order_pairs(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[2n]` scores of answer pairs (prompt-major: a0, b0, a1, b1, ...) -> (index of the chosen answer of
    each pair `[n]`, 1.0 where the pair is decisive and 0.0 for a tie `[n]`). Ties keep the first as chosen."""
    pair = scores.view(-1, 2)
    second_better = (pair[:, 1] > pair[:, 0]).long()
    chosen = torch.arange(pair.shape[0]) * 2 + second_better
    return chosen, (pair[:, 0] != pair[:, 1]).float()


class OnlineDPOTrainer(DPOTrainer):
    def __init__(
        self,
        *args: Any,
        judge: Any,
        max_completion_length: int = 128,
        temperature: float = 1.0,
        rollout_backend: str = "engine",
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.rollout_backend = rollout_backend
        self.judge = judge  # a reward model (callable on a batch) or a list of reward functions
        self.max_completion_length = max_completion_length
        self.temperature = temperature

    def training_loss(self, model: torch.nn.Module, inputs: dict[str, Any], num_items: Any) -> torch.Tensor:
        prompts: list[list[int]] = inputs["prompt_ids"]
        tokenizer = self.processing_class
        inner = self.accelerator.unwrap_model(model)
        answers = rollout(self, inner, prompts, 2, self.max_completion_length, self.temperature)
        twice = [p for p in prompts for _ in range(2)]
        scores = self.score(twice, answers, [a for a in inputs["answer"] for _ in range(2)])
        chosen, decisive = order_pairs(scores)
        rejected = chosen ^ 1  # the other answer of the pair
        pieces = [answers[i] for i in chosen.tolist()] + [answers[i] for i in rejected.tolist()]
        batch = batch_from_pieces(prompts + prompts, pieces, tokenizer.pad_token_id)
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        batch["pair_weights"] = decisive.to(self.args.device)
        if model.training:
            self.tokens_seen += int(batch["attention_mask"].sum())
        first = [int(chosen[0]), int(rejected[0])]
        self.record_samples(
            model,
            shown_samples(
                tokenizer,
                [prompts[0]] * 2,
                [answers[i] for i in first],
                scores[first],
                role=["chosen", "rejected"],
            ),
        )
        loss = super().training_loss(model, batch, num_items)
        self.record(
            model,
            **{
                "score/chosen": scores[chosen],
                "score/rejected": scores[rejected],
                "ties": 1.0 - decisive,
                "completion_length": float(sum(len(a) for a in answers)) / len(answers),
            },
        )
        return loss

    def save_weights(self, output_dir: str | None, state_dict: Any) -> None:
        """The trained adapter only: a LoRA reward model rides on the same base as adapter 'reward'."""
        inner = self.accelerator.unwrap_model(self.model)
        if len(getattr(inner, "peft_config", {})) <= 1:
            super().save_weights(output_dir, state_dict)
            return
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        inner.save_pretrained(str(out), selected_adapters=["default"])
        if self.processing_class is not None:
            self.processing_class.save_pretrained(str(out))

    def score(
        self, prompts: list[list[int]], answers: list[list[int]], references: list[Any]
    ) -> torch.Tensor:
        if isinstance(self.judge, list):  # reward functions
            return score_completions(self.judge, self.processing_class, prompts, answers, references).float()
        batch = batch_from_pieces(prompts, answers, self.processing_class.pad_token_id)
        with torch.no_grad():
            return self.judge({k: v.to(self.args.device) for k, v in batch.items()}).float().cpu()
