"""SimPO (Meng et al. 2024): length-averaged log-probabilities and a target margin gamma, no reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tuneforge.train.pref_losses import PREF_LOSSES, PairLogps
from tuneforge.train.pref_losses.sigmoid import SmoothingParams

if TYPE_CHECKING:
    from tuneforge.config import FinetuningArguments
    from tuneforge.train.losses import PreferenceLoss


class SimPOParams(SmoothingParams):
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin (gamma).")


@PREF_LOSSES.register("simpo", SimPOParams)
def simpo(logps: PairLogps, args: FinetuningArguments) -> PreferenceLoss:
    from tuneforge.train.losses import simpo_loss

    return simpo_loss(
        logps.chosen_avg, logps.rejected_avg, args.pref_beta, args.simpo_gamma, args.dpo_label_smoothing
    )
