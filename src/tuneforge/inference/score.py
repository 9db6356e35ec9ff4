"""Scoring answers with a trained reward model (`tuneforge score`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config import DataArguments, ModelArguments
from tuneforge.data.conversation import Conversation, Message
from tuneforge.data.dataset import tokenize_chunk
from tuneforge.data.template import chat_template_for
from tuneforge.model.loader import load_model, load_tokenizer
from tuneforge.utils.errors import UserError


class RewardModel:
    """A reward model from an output directory of `stage: rm` (an adapter with its scoring head, or a full model)."""

    def __init__(self, model_args: ModelArguments, reward_model: str, template: str | None = None):
        from peft import PeftModel

        path = Path(reward_model)
        if (path / "adapter_config.json").is_file():
            self.tokenizer = load_tokenizer(model_args)
            self.model = PeftModel.from_pretrained(load_model(model_args, head="score"), path)
        elif (path / "config.json").is_file():
            full = model_args.model_copy(
                update={"model_name_or_path": str(path), "adapter_name_or_path": None}
            )
            self.tokenizer = load_tokenizer(full)
            self.model = load_model(full, head="score")
        else:
            raise UserError(
                f"--reward_model {path}: not an output directory of stage rm (no adapter_config.json or config.json)"
            )
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.template = chat_template_for(self.tokenizer, template)
        self.data_args = DataArguments(
            template=template,
            cutoff_len=self.tokenizer.model_max_length if self.tokenizer.model_max_length < 10**6 else 4096,
        )

    def score(self, prompt: str, response: str, system: str | None = None) -> float:
        """The reward of `response` to `prompt`, read where training read it (the answer's last token)."""
        import torch

        conversation = Conversation(
            [Message("user", prompt), Message("assistant", response)], system=system, source="score"
        )
        example = tokenize_chunk([conversation], self.data_args, self.tokenizer, self.template)[0]
        ids = torch.tensor([example.input_ids])
        with torch.no_grad():
            return float(self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0])


def reward_model_args(reward_model: str, given: dict[str, Any]) -> dict[str, Any]:
    """Keys for the base model: those given, else the ones the reward model was trained with (its run.yaml)."""
    run = Path(reward_model) / "run.yaml"
    if "model_name_or_path" in given or not run.is_file():
        return given
    import yaml

    recorded = yaml.safe_load(run.read_text(encoding="utf-8")) or {}
    keys = {
        k: recorded[k]
        for k in ("model_name_or_path", "template", "trust_remote_code", "cache_dir")
        if k in recorded
    }
    return {**keys, **given}
