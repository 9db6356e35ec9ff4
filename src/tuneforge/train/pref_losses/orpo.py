"""ORPO (Hong et al. 2024): NLL of the chosen answer plus an odds-ratio term, no reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.train.pref_losses import PREF_LOSSES, PairLogps

if TYPE_CHECKING:
    from tuneforge.config import FinetuningArguments
    from tuneforge.train.losses import PreferenceLoss


@PREF_LOSSES.register("orpo", own_nll=True)
def orpo(logps: PairLogps, args: FinetuningArguments) -> PreferenceLoss:
    from tuneforge.train.losses import orpo_loss

    return orpo_loss(logps.chosen_avg, logps.rejected_avg, args.pref_beta)
