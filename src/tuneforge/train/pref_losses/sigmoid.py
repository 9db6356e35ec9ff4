"""DPO's own loss (Rafailov et al. 2023): -log s(beta h), with optional conservative label smoothing."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tuneforge.config.plugins import Params
from tuneforge.train.pref_losses import PREF_LOSSES, margin_loss


class SmoothingParams(Params):
    """Label smoothing of the sigmoid-shaped losses (sigmoid, simpo)."""

    dpo_label_smoothing: float = Field(
        0.0, ge=0, le=0.5, description="dpo (sigmoid, simpo): probability that a preference label is flipped."
    )


def sigmoid(h: Any, args: Any) -> Any:
    from tuneforge.train.losses import sigmoid_margin

    return sigmoid_margin(h, args.pref_beta, args.dpo_label_smoothing)


PREF_LOSSES.register("sigmoid", SmoothingParams, reference=True)(margin_loss(sigmoid))
