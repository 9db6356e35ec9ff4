"""A disk that fills up or turns read-only mid-run: exit 1, a sentence naming what was kept, and the rerun
continues from the last complete checkpoint."""

import errno
from pathlib import Path

import torch
import yaml

from tuneforge.cli.main import main
from tuneforge.train.checkpoint import list_checkpoints, verify
from tuneforge.train.output import write_fault

from .test_sft_stage import tiny_run_keys


def _config(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run_keys(tiny_model_dir, out, max_steps=6, save_steps=2)))
    return path, out


def test_disk_full_at_a_checkpoint_exits_1_keeps_the_last_one_and_the_rerun_continues(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    path, out = _config(tiny_model_dir, tmp_path)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "stopped taking writes" in err and "No space left on device" in err, err
    assert "checkpoint-2 (step 2) is complete" in err and "continue from checkpoint-2" in err, err
    assert "Traceback" not in err
    assert [c.step for c in list_checkpoints(out)] == [2]
    assert verify(out / "checkpoint-2") is None
    assert not [p for p in out.iterdir() if p.name.startswith(".partial")]  # no half-written folder left

    monkeypatch.setattr(torch, "save", real_save)  # space is back: the same command continues
    assert main(["train", str(path)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert (out / "adapter_model.safetensors").is_file()


def test_only_write_errors_inside_output_dir_are_disk_faults(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    inside = OSError(errno.EROFS, "Read-only file system", str(out / "checkpoint-2" / "x"))
    assert "no checkpoint had been completed" in str(write_fault(inside, out))
    assert write_fault(OSError(errno.EACCES, "Permission denied", "/etc/data.json"), out) is None
    assert write_fault(OSError(errno.ENOENT, "No such file", str(out / "x")), out) is None
    assert write_fault(OSError(errno.ENOSPC, "No space left on device"), out) is not None
