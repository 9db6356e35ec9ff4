"""The output directory: decide between a fresh start and a resume, never overwrite a finished run by accident.

Files tuneforge itself writes while a run is in progress (run.yaml, metrics.jsonl, checkpoints and
`.partial-*` folders) never block a restart: a run killed before its first checkpoint starts
afresh, one killed later resumes from its newest complete checkpoint. Anything else in a non-empty
output_dir (a finished model, a user's file) is kept, and the run refuses to start.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

from tuneforge.config import RunConfig, dump_config, read_yaml
from tuneforge.train.checkpoint import (
    MANIFEST,
    PARTIAL,
    Checkpoint,
    list_checkpoints,
    newest_complete,
    remove_partials,
    verify,
)
from tuneforge.utils.errors import NothingToDo, UserError
from tuneforge.utils.log import info, warn

RUN_FILES = ("run.yaml", "metrics.jsonl")  # tuneforge_finished.json is not one: a finished run is kept
# Keys that decide the shapes of what a checkpoint holds: resuming with different ones cannot work.
IDENTITY_KEYS = (
    "model_name_or_path",
    "stage",
    "finetuning_type",
    "lora_rank",
    "lora_target",
    "quantization_bit",
)


def prepare_output_dir(cfg: RunConfig) -> tuple[Path, Checkpoint | None]:
    """Create output_dir and return it with the checkpoint to resume from (None: start afresh). With several
    processes rank 0 prepares the folder first; the others then only read it."""
    from tuneforge.train.launch import is_main, main_process_first

    with main_process_first(cfg.llamafactory.get("ddp_timeout")):
        return _prepare_output_dir(cfg, is_main())


def _prepare_output_dir(cfg: RunConfig, main: bool) -> tuple[Path, Checkpoint | None]:
    t = cfg.training
    out = Path(t.output_dir)
    requested = t.resume_from_checkpoint
    if requested not in (None, "auto"):
        resume = _explicit_checkpoint(Path(requested))
    elif t.overwrite_output_dir:
        if main:
            _clear_run_state(out)
        resume = None
    else:
        _stop_if_finished(cfg, out)
        resume = _auto_checkpoint(out) if requested == "auto" else None
        if resume is None and main:
            _refuse_foreign_files(out)
    if resume is not None:
        _check_same_run(cfg, resume.path)
        if main:
            info(f"resuming from {resume.path} (step {resume.step})")
    if not main:
        return out, resume
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_partials(out)
        trim_metrics(out / "metrics.jsonl", resume.step if resume else 0)
        dump_config(cfg, out / "run.yaml")
    except OSError as err:  # a read-only disk, a file where a folder should be, no space left
        raise UserError(
            f"output_dir {out} cannot be written ({err.strerror or err}); nothing was trained or changed. "
            "Choose a writable output_dir"
        ) from None
    return out, resume


FINISHED = "tuneforge_finished.json"

# errors that mean the disk, not the run, failed: no space, read-only, quota, permissions, I/O
_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM}


class WriteFault(UserError):
    """output_dir stopped taking writes in the middle of a run; exit status 1 (the environment, not the config)."""

    exit_code = 1


def write_fault(err: OSError, out: Path) -> WriteFault | None:
    """A sentence for an OSError that came from writing into `out` mid-run, saying what was kept; None when
    the error is something else (a data file that cannot be read is reported where it is read)."""
    if err.errno not in _DISK_ERRNOS:
        return None
    name = Path(str(err.filename)).resolve() if err.filename else None
    if name is not None and out.resolve() not in (name, *name.parents):
        return None
    if name is None and err.errno in (errno.EACCES, errno.EPERM, errno.EIO):
        return None
    kept, _ = newest_complete(out) if out.is_dir() else (None, [])
    if kept is None:
        what = "no checkpoint had been completed, so the next run starts afresh"
        then = "run the same command again"
    else:
        what = f"{kept.path.name} (step {kept.step}) is complete and verified; nothing after it was kept"
        then = f"run the same command again to continue from {kept.path.name}"
    return WriteFault(
        f"output_dir {out} stopped taking writes during training ({err.strerror or err}); {what}. "
        f"Free space or make the folder writable, then {then}"
    )


def _stop_if_finished(cfg: RunConfig, out: Path) -> None:
    """Running a finished run's command again changes nothing: its model stays as it was. Asking for more
    (a larger max_steps or num_train_epochs) continues it on purpose."""
    marker = out / FINISHED
    if not marker.is_file():
        return
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
        step, steps, epochs = int(done["step"]), int(done["max_steps"]), float(done["num_train_epochs"])
    except (ValueError, KeyError, TypeError):
        return  # an unreadable marker decides nothing: the usual resume rules apply
    t = cfg.training
    more = (t.max_steps > 0 and t.max_steps > max(step, steps)) or (
        t.max_steps <= 0 and t.num_train_epochs > epochs
    )
    if more:
        marker.unlink()
        info(f"continuing the finished run in {out} past step {step}")
        return
    raise NothingToDo(
        f"the run in {out} is finished (step {step}); its model is in {out}. Nothing was changed: set "
        "overwrite_output_dir: true to train it again from scratch, or raise max_steps / num_train_epochs to "
        "continue it"
    )


def mark_finished(cfg: RunConfig, out: Path, step: int) -> None:
    """Record that the run in `out` is complete (written last, after the model)."""
    t = cfg.training
    record = {"step": step, "max_steps": t.max_steps, "num_train_epochs": t.num_train_epochs}
    tmp = out / f".{FINISHED}.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(out / FINISHED)


def _explicit_checkpoint(path: Path) -> Checkpoint:
    problem = verify(path) if path.is_dir() else "it does not exist"
    if problem:
        raise UserError(f"resume_from_checkpoint {path}: {problem}")
    step = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["step"]
    return Checkpoint(path, int(step))


def _auto_checkpoint(out: Path) -> Checkpoint | None:
    resume, damaged = newest_complete(out)
    for path, problem in damaged:
        fallback = f"falling back to {resume.path.name}" if resume else "no earlier complete checkpoint"
        warn(f"skipping damaged checkpoint {path}: {problem}; {fallback}")
    if resume is None and damaged:
        names = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise UserError(
            f"output_dir {out} holds checkpoints but none is complete ({names}); "
            "set overwrite_output_dir: true to start afresh"
        )
    return resume


def _refuse_foreign_files(out: Path) -> None:
    if not out.is_dir():
        return
    foreign = sorted(
        p.name for p in out.iterdir() if p.name not in RUN_FILES and not p.name.startswith(PARTIAL)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserError(
            f"output_dir {out} is not empty ({shown}) and holds no checkpoint to resume; choose another "
            "output_dir, or set overwrite_output_dir: true to replace it"
        )


def _clear_run_state(out: Path) -> None:
    """overwrite_output_dir: forget checkpoints, metrics and the finished mark of the previous run in `out`."""
    (out / FINISHED).unlink(missing_ok=True)
    for checkpoint in list_checkpoints(out):
        shutil.rmtree(checkpoint.path)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def _check_same_run(cfg: RunConfig, checkpoint: Path) -> None:
    recorded = checkpoint.parent / "run.yaml"
    if not recorded.is_file():
        return
    before = read_yaml(recorded)
    now = cfg.to_flat()
    changed = [k for k in IDENTITY_KEYS if k in before and before[k] != now.get(k)]
    if changed:
        details = ", ".join(f"{k}: {before[k]!r} -> {now.get(k)!r}" for k in changed)
        raise UserError(
            f"cannot resume {checkpoint}: it was trained with different {details}; "
            "set overwrite_output_dir: true (or another output_dir) to start a new run"
        )


def trim_metrics(path: Path, last_step: int) -> None:
    """Keep only the records up to `last_step` (those after it will be trained again); drop a torn last line."""
    if not path.is_file():
        return
    if last_step <= 0:
        path.unlink()
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if record.get("step", 0) <= last_step:
            kept.append(json.dumps(record))
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def save_run(cfg: RunConfig, out: Path) -> None:
    dump_config(cfg, out / "run.yaml")
    if cfg.finetuning.plot_loss:
        from tuneforge.train.plot import plot_loss

        plot_loss(out)
