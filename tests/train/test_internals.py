"""What tuneforge's overrides of the Trainer's private methods rely on, checked against the installed
transformers: each test fails the day upstream changes that behaviour (then re-read `train/internals.py`)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import transformers.trainer as upstream
from transformers import Trainer

from tuneforge.train.internals import CHECKED_TRANSFORMERS, GuardedTrainer, transformers_checked

SRC = Path(__file__).resolve().parents[2] / "src" / "tuneforge"


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_installed_transformers_is_the_checked_one_and_pyproject_pins_it():
    assert transformers_checked(), upstream.__version__
    assert not transformers_checked("5.25.0") and not transformers_checked("5.23.9")
    pin = f"transformers>={CHECKED_TRANSFORMERS[0][0]}.{CHECKED_TRANSFORMERS[0][1]},<{CHECKED_TRANSFORMERS[1][0]}.{CHECKED_TRANSFORMERS[1][1]}"
    assert pin in (SRC.parents[1] / "pyproject.toml").read_text()


def test_grad_norm_is_read_right_before_the_optimizer_and_scheduler_step():
    """after_grad_norm can turn the coming updates into no-ops only if the Trainer calls _get_grad_norm, then
    optimizer.step(), then lr_scheduler.step(), once each per update."""
    assert params(Trainer._get_grad_norm) == ["self", "model", "grad_norm"]
    body = inspect.getsource(Trainer._run_epoch)
    at = [
        body.index(s) for s in ("self._get_grad_norm(", "self.optimizer.step()", "self.lr_scheduler.step()")
    ]
    assert at == sorted(at), at
    assert body.count("self.optimizer.step()") == 1 and body.count("self._get_grad_norm(") == 1


def test_checkpoints_are_written_through_save_checkpoint_with_the_pieces_we_call():
    assert params(Trainer._save_checkpoint) == ["self", "model", "trial"]
    assert "self._save_checkpoint(" in inspect.getsource(Trainer._maybe_log_save_evaluate)
    for name in ("_save_optimizer_and_scheduler", "_save_scaler", "_save_rng_state"):
        assert params(getattr(Trainer, name)) == ["self", "output_dir"], name
    assert params(Trainer._get_output_dir) == ["self", "trial"] and params(Trainer.store_flos) == ["self"]
    # what the upstream checkpoint holds that ours must hold too (resume reads these names)
    for name in ("TRAINER_STATE_NAME", "OPTIMIZER_NAME", "SCHEDULER_NAME"):
        assert hasattr(upstream, name), name


def test_save_writes_a_pickled_training_args_file_that_save_weights_removes():
    assert params(Trainer._save) == ["self", "output_dir", "state_dict"]
    assert upstream.TRAINING_ARGS_NAME == "training_args.bin"
    assert re.search(r"torch\.save\(self\.args, .*TRAINING_ARGS_NAME", inspect.getsource(Trainer._save))
    assert "self._save(" in inspect.getsource(Trainer.save_model)


def test_resume_loads_weights_through_load_from_checkpoint():
    assert params(Trainer._load_from_checkpoint) == ["self", "resume_from_checkpoint", "model"]
    assert "self._load_from_checkpoint(" in inspect.getsource(Trainer.train) + inspect.getsource(
        Trainer._inner_training_loop
    )


@pytest.mark.parametrize("path", sorted(p for p in (SRC / "train").rglob("*.py") if p.name != "internals.py"))
def test_no_other_module_overrides_or_calls_a_private_trainer_method(path):
    private = {n for n, _ in inspect.getmembers(Trainer) if n.startswith("_") and not n.startswith("__")}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    called = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, (ast.Name, ast.Call)) and n.attr in private
    }
    assert not (defined | called) & private, (defined | called) & private


def test_the_door_routes_every_override_to_a_public_hook():
    overridden = {n for n in vars(GuardedTrainer) if n.startswith("_") and not n.startswith("__")}
    assert overridden == {
        "_get_grad_norm",
        "_save_checkpoint",
        "_save",
        "_load_from_checkpoint",
        "_get_train_sampler",
    }
