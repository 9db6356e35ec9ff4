"""SLiC's hinge loss (Zhao et al. 2023): max(0, 1 - beta h)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.train.pref_losses import PREF_LOSSES, PairLogps

if TYPE_CHECKING:
    from tuneforge.config import FinetuningArguments
    from tuneforge.train.losses import PreferenceLoss


@PREF_LOSSES.register("hinge", reference=True)
def hinge(logps: PairLogps, args: FinetuningArguments) -> PreferenceLoss:
    from tuneforge.train.losses import dpo_loss, hinge_margin

    beta = args.pref_beta
    return dpo_loss(
        logps.chosen,
        logps.rejected,
        logps.ref_chosen,
        logps.ref_rejected,
        beta,
        lambda h: hinge_margin(h, beta),
    )
