"""Online DPO: DPO on pairs the policy samples as it trains, judged by a reward model or reward functions.

Run as: tuneforge train examples/online_dpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.data.preference import PromptCollator, build_prompt_data
from tuneforge.model.loader import load_tokenizer
from tuneforge.train.output import prepare_output_dir
from tuneforge.train.stages import register_stage
from tuneforge.train.stages.dpo import DPOParams
from tuneforge.train.stages.grpo import RolloutParams, check_rollout_backend
from tuneforge.train.stages.ppo import RewardModelParams, reward_judge
from tuneforge.utils.errors import UserError


class OnlineDPOParams(RolloutParams, RewardModelParams, DPOParams):
    """Online DPO takes DPO's loss keys, the rollout keys and a judge (reward_model or reward_funcs)."""


@register_stage("online_dpo", OnlineDPOParams)
def run(cfg: RunConfig) -> Path:
    from tuneforge.train.online_dpo import OnlineDPOTrainer
    from tuneforge.train.pref_losses import needs_reference
    from tuneforge.train.runner import build_model, number_rows, reference_model, train_and_save

    f = cfg.finetuning
    check_rollout_backend(f)
    if not f.reward_model and not f.reward_funcs:
        raise UserError(
            "stage online_dpo needs a judge for its sampled pairs: set reward_model (a stage rm output) or "
            "reward_funcs (e.g. accuracy, exact_match, or path/to/file.py:function)"
        )
    output_dir, resume = prepare_output_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_prompt_data(
        cfg.data, tokenizer, seed=cfg.training.seed
    )  # bad data fails before weights load
    model = build_model(cfg)
    judge = reward_judge(cfg, model, tokenizer)
    return train_and_save(
        cfg,
        OnlineDPOTrainer,
        model,
        tokenizer,
        number_rows(data.train),
        data.eval,
        PromptCollator(),
        output_dir,
        resume,
        ref_model=reference_model(cfg) if needs_reference(f.pref_loss) else None,
        finetuning=f,
        judge=judge,
        max_completion_length=f.max_completion_length,
        temperature=f.rollout_temperature,
        rollout_backend=f.rollout_backend,
    )
