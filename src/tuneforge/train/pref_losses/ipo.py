"""IPO (Azar et al. 2023): a squared loss that keeps the margin near 1/(2 beta)."""

from __future__ import annotations

from typing import Any

from tuneforge.train.pref_losses import PREF_LOSSES, margin_loss


def ipo(h: Any, args: Any) -> Any:
    from tuneforge.train.losses import ipo_margin

    return ipo_margin(h, args.pref_beta)


PREF_LOSSES.register("ipo", reference=True)(margin_loss(ipo))
