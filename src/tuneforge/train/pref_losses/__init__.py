"""Preference losses as plug-ins: `pref_loss: NAME` (stage dpo) picks the member registered under NAME.

A member is `loss(logps: PairLogps, args) -> PreferenceLoss`, registered with its keys and whether it
needs the reference policy (`reference=True`) or brings its own NLL term (`own_nll=True`, no pref_ftx
added). The formulas are pure functions in `tuneforge.train.losses`, each tested by hand; `sigmoid.py`
is the file to copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.config.plugins import family

if TYPE_CHECKING:
    import torch

PREF_LOSSES = family("pref_loss")


@dataclass
class PairLogps:
    """Per-pair log-probabilities of the answers, each `[pairs]`: summed and length-averaged under the
    policy, summed under the reference (None for reference-free losses)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_avg: torch.Tensor
    rejected_avg: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


def margin_loss(margin: Callable[[torch.Tensor, Any], torch.Tensor]) -> Callable[[PairLogps, Any], Any]:
    """A reference-based loss from its formula on the log-ratio margin h: `margin(h, finetuning_args)`."""

    def loss(logps: PairLogps, args: Any) -> Any:
        from tuneforge.train.losses import dpo_loss

        return dpo_loss(
            logps.chosen,
            logps.rejected,
            logps.ref_chosen,
            logps.ref_rejected,
            args.pref_beta,
            lambda h: margin(h, args),
        )

    return loss


def needs_reference(name: str) -> bool:
    return bool(PREF_LOSSES.get(name).traits.get("reference"))


def preference_loss(name: str) -> Any:
    return PREF_LOSSES.get(name)
