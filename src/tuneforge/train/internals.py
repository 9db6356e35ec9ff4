"""The one door to transformers' Trainer internals.

tuneforge needs a few things the Trainer has no public hook for: look at the gradient norm before
the optimizer steps (the NaN guard), turn that step into a no-op, write checkpoints atomically, keep
pickles out of saved folders, and save/load PPO's policy-and-value-head pair. Every override of a
private Trainer method lives in `GuardedTrainer` below and hands over to a public hook that
`TuneforgeTrainer` and the stage trainers implement, so nothing else in tuneforge touches a private
name. Each override was read against the transformers versions in `CHECKED_TRANSFORMERS` (pyproject
pins the same range); `tests/train/test_internals.py` checks, per override, that upstream still does
what the override relies on, and fails the day it stops.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import transformers
from transformers import Trainer

if TYPE_CHECKING:
    import torch

CHECKED_TRANSFORMERS = ((5, 24), (5, 25))  # [from, to): the minor versions these overrides were read against


def transformers_checked(version: str = transformers.__version__) -> bool:
    """Whether `version` is inside the range the overrides were checked against."""
    major_minor = tuple(int(part) for part in version.split(".")[:2])
    return CHECKED_TRANSFORMERS[0] <= major_minor < CHECKED_TRANSFORMERS[1]


if not transformers_checked():
    warnings.warn(
        f"tuneforge's Trainer overrides were checked against transformers "
        f"{'.'.join(map(str, CHECKED_TRANSFORMERS[0]))}.x; this is {transformers.__version__}, so checkpoints "
        "and the NaN guard may misbehave. Install the version pyproject.toml pins (`make setup`).",
        stacklevel=1,
    )


class GuardedTrainer(Trainer):
    """The Trainer with its private steps routed to public hooks (override those, never the private names)."""

    # ---- hooks for subclasses ----

    def after_grad_norm(self, grad_norm: Any) -> None:
        """Called with the gradient norm of each update, before the optimizer and scheduler step."""

    def write_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Write checkpoint-N (the Trainer decided it is time)."""
        super()._save_checkpoint(model, trial)

    def save_weights(self, output_dir: str | None, state_dict: Any) -> None:
        """Write the trained weights (and tokenizer) into `output_dir`."""
        super()._save(output_dir, state_dict)

    def load_weights(self, checkpoint_dir: str, model: Any) -> None:
        """Load the trained weights of a checkpoint when resuming."""
        super()._load_from_checkpoint(checkpoint_dir, model)

    # ---- what the hooks may use ----

    def skip_next_update(self) -> None:
        """Make the optimizer's and the scheduler's next `step()` no-ops (the Trainer calls each right after
        the gradient norm), so weights, moments and learning rate stay as they were."""
        for owner in (self.optimizer, self.lr_scheduler):
            _skip_next_step(owner)

    def run_dir(self, trial: Any) -> Path:
        """The folder checkpoints go into."""
        return Path(self._get_output_dir(trial=trial))

    def write_trainer_files(self, folder: str, trial: Any) -> None:
        """What the Trainer itself puts into a checkpoint besides the weights: FLOs, optimizer, scheduler,
        grad scaler and RNG states (unless save_only_model)."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(folder)
            self._save_scaler(folder)
            self._save_rng_state(folder)

    # ---- the private overrides, each a one-line handover ----

    def train_sampler(self, base: Any) -> Any:
        """The training sampler to use instead of transformers' `base` (default: `base`)."""
        return base

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        return self.train_sampler(super()._get_train_sampler(*args, **kwargs))

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self.after_grad_norm(grad_norm)
        return grad_norm

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        self.write_checkpoint(model, trial)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        self.save_weights(output_dir, state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self.load_weights(resume_from_checkpoint, model)


def _skip_next_step(owner: Any) -> None:
    """Replace `owner.step` with a no-op for one call."""

    def skip(*args: Any, **kwargs: Any) -> None:
        del owner.step

    owner.step = skip
