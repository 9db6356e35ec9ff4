"""DPO's own loss (Rafailov et al. 2023): -log s(beta h), with optional conservative label smoothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tuneforge.config.plugins import Params
from tuneforge.train.pref_losses import PREF_LOSSES, PairLogps

if TYPE_CHECKING:
    from tuneforge.config import FinetuningArguments
    from tuneforge.train.losses import PreferenceLoss


class SmoothingParams(Params):
    """Label smoothing of the sigmoid-shaped losses (sigmoid, simpo)."""

    dpo_label_smoothing: float = Field(
        0.0, ge=0, le=0.5, description="dpo (sigmoid, simpo): probability that a preference label is flipped."
    )


@PREF_LOSSES.register("sigmoid", SmoothingParams, reference=True)
def sigmoid(logps: PairLogps, args: FinetuningArguments) -> PreferenceLoss:
    from tuneforge.train.losses import dpo_loss, sigmoid_margin

    beta = args.pref_beta
    return dpo_loss(
        logps.chosen,
        logps.rejected,
        logps.ref_chosen,
        logps.ref_rejected,
        beta,
        lambda h: sigmoid_margin(h, beta, args.dpo_label_smoothing),
    )
