"""IPO (Azar et al. 2023): a squared loss that keeps the margin near 1/(2 beta)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.train.pref_losses import PREF_LOSSES, PairLogps

if TYPE_CHECKING:
    from tuneforge.config import FinetuningArguments
    from tuneforge.train.losses import PreferenceLoss


@PREF_LOSSES.register("ipo", reference=True)
def ipo(logps: PairLogps, args: FinetuningArguments) -> PreferenceLoss:
    from tuneforge.train.losses import dpo_loss, ipo_margin

    beta = args.pref_beta
    return dpo_loss(
        logps.chosen,
        logps.rejected,
        logps.ref_chosen,
        logps.ref_rejected,
        beta,
        lambda h: ipo_margin(h, beta),
    )
