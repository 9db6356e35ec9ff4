"""SLiC's hinge loss (Zhao et al. 2023): max(0, 1 - beta h)."""

from __future__ import annotations

from typing import Any

from tuneforge.train.pref_losses import PREF_LOSSES, margin_loss


def hinge(h: Any, args: Any) -> Any:
    from tuneforge.train.losses import hinge_margin

    return hinge_margin(h, args.pref_beta)


PREF_LOSSES.register("hinge", reference=True)(margin_loss(hinge))
