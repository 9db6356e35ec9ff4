"""Checkpoints: written atomically with a manifest, damage detected and named, rotation, exact resume."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_sft_stage import config
from tuneforge.train import checkpoint
from tuneforge.train.callbacks import read_metrics
from tuneforge.train.stages import run_stage
from tuneforge.utils.errors import UserError


def make_checkpoint(root: Path, step: int, payload: bytes = b"weights") -> Path:
    staging = root / f".partial-checkpoint-{step}"
    (staging / "sub").mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(payload * 100)
    (staging / "sub" / "state.json").write_text(json.dumps({"step": step}))
    return checkpoint.publish(staging, root / f"checkpoint-{step}", step)


def test_publish_renames_a_complete_checkpoint_into_place(tmp_path):
    path = make_checkpoint(tmp_path, 5)
    assert path == tmp_path / "checkpoint-5" and not (tmp_path / ".partial-checkpoint-5").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 5
    assert set(manifest["files"]) == {"adapter_model.safetensors", "sub/state.json"}
    assert checkpoint.verify(path) is None


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.joinpath("adapter_model.safetensors").write_bytes(b"weights" * 50), "truncated"),
        (lambda p: flip_byte(p / "adapter_model.safetensors", 123), "corrupted"),
        (lambda p: p.joinpath("manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: p.joinpath("sub", "state.json").unlink(), "sub/state.json is missing"),
        # damage that keeps manifest.json valid JSON
        (lambda p: edit_manifest(p, lambda t: t.replace('"size"', '"sizd"', 1)), "is malformed at"),
        (lambda p: edit_manifest(p, lambda t: t.replace('"files"', '"filez"')), "is malformed"),
        (lambda p: edit_manifest(p, lambda t: t.replace('"step": 4', '"step": "4"')), "is malformed"),
        (lambda p: edit_manifest(p, lambda t: "[]"), "is malformed"),
        (lambda p: edit_manifest(p, lambda t: t.replace('"sub/state.json"', '"../../escape"')), "outside"),
        (lambda p: edit_manifest(p, lambda t: t[:-5]), "unreadable"),
    ],
    ids=[
        "truncated",
        "flipped-byte",
        "no-manifest",
        "missing-file",
        "size-key",
        "files-key",
        "step-type",
        "not-object",
        "escape",
        "cut",
    ],  # fmt: skip
)
def test_damage_is_detected_named_and_auto_resume_falls_back(tmp_path, damage, reason, capsys):
    make_checkpoint(tmp_path, 2)
    newest = make_checkpoint(tmp_path, 4)
    damage(newest)
    problem = checkpoint.verify(newest)
    assert problem is not None and reason in problem
    found, damaged = checkpoint.newest_complete(tmp_path)
    assert found.step == 2 and damaged == [(newest, problem)]


def test_files_are_hashed_at_once_and_listed_in_order(tmp_path, monkeypatch):
    """Writing and verifying the manifest hash several files at a time (one thread each, up to the cores), and
    the manifest is what hashing them one by one gives."""
    import threading
    import time

    staging = tmp_path / ".partial-checkpoint-3"
    staging.mkdir()
    for i in range(4):
        (staging / f"shard-{i}.safetensors").write_bytes(bytes([i]) * (1 << 16) * (i + 1))
    running, most = set(), []
    real = checkpoint.sha256_file

    def slow_sha256(path: Path) -> str:
        running.add(threading.get_ident())
        most.append(len(running))
        time.sleep(0.05)  # long enough that the other threads start meanwhile
        running.discard(threading.get_ident())
        return real(path)

    monkeypatch.setattr(checkpoint, "sha256_file", slow_sha256)
    monkeypatch.setattr(checkpoint.os, "cpu_count", lambda: 4)
    published = checkpoint.publish(staging, tmp_path / "checkpoint-3", 3)
    assert max(most) >= 2
    files = json.loads((published / "manifest.json").read_text())["files"]
    assert list(files) == [f"shard-{i}.safetensors" for i in range(4)]
    for name, entry in files.items():
        assert entry == {"size": (published / name).stat().st_size, "sha256": real(published / name)}
    most.clear()
    assert checkpoint.verify(published) is None and max(most) >= 2


def edit_manifest(checkpoint_dir: Path, change) -> None:
    manifest = checkpoint_dir / "manifest.json"
    manifest.write_text(change(manifest.read_text()))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_rotation_keeps_the_newest_complete_and_the_best(tmp_path):
    for step in (1, 2, 3, 4, 5):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-5" / "manifest.json").unlink()  # the newest is damaged
    deleted = checkpoint.rotate(tmp_path, limit=2, keep=[tmp_path / "checkpoint-1"])
    left = [c.step for c in checkpoint.list_checkpoints(tmp_path)]
    # limit 2, but the best (1) and the newest complete (4) are never deleted; the damaged one goes first
    assert left == [1, 4] and [p.name for p in deleted] == ["checkpoint-5", "checkpoint-2", "checkpoint-3"]
    assert not list(tmp_path.glob(".partial-*"))


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl")]


def crash_in_step(monkeypatch, step: int, accumulation: int) -> None:
    """Make the first forward pass of optimizer step `step` raise, as a crashed process would stop there."""
    from tuneforge.train import trainer as trainer_module

    real, calls = trainer_module.answer_only_loss, []

    def crashing(model, inputs, num_items, *rest):
        if model.training:
            calls.append(1)
            if len(calls) == (step - 1) * accumulation + 1:
                raise RuntimeError("simulated crash")
        return real(model, inputs, num_items, *rest)

    monkeypatch.setattr(trainer_module, "answer_only_loss", crashing)


# merge_micro_batches off: the crash is placed by counting forward passes, one per micro-batch
RESUME_KEYS = {
    "max_steps": 8,
    "save_steps": 2,
    "lora_dropout": 0.1,
    "lr_scheduler_type": "cosine",
    "merge_micro_batches": False,
}


def test_resume_mid_epoch_two_reproduces_the_uninterrupted_losses(tiny_model_dir, tmp_path, monkeypatch):
    # 24 rows, 8 per optimizer step: 3 steps per epoch, so step 5 is in the middle of epoch 2.
    # Dropout is on so that a wrong RNG restore would show in the losses.
    straight = tmp_path / "straight"
    run_stage(config(tiny_model_dir, straight, **RESUME_KEYS))

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        crash_in_step(patch, 5, accumulation=2)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_stage(config(tiny_model_dir, resumed, **RESUME_KEYS))
    assert [c.step for c in checkpoint.list_checkpoints(resumed)] == [2, 4]
    assert max(step for step, _ in losses(resumed)) == 4

    from tuneforge.data.collator import PaddingCollator

    collated = []
    real_call = PaddingCollator.__call__
    monkeypatch.setattr(
        PaddingCollator, "__call__", lambda self, rows: collated.append(1) or real_call(self, rows)
    )
    run_stage(config(tiny_model_dir, resumed, **RESUME_KEYS))  # auto: picks checkpoint-4
    # steps 5-8 only (+1: accelerate's loader looks one batch ahead): the position is restored, not replayed
    assert len(collated) == 4 * 2 + 1
    assert losses(resumed) == losses(straight)
    assert [s for s, _ in losses(straight)] == list(range(1, 9))
    a = load_file(straight / "adapter_model.safetensors")
    b = load_file(resumed / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    tokens = [r["tokens_seen"] for r in read_metrics(resumed / "metrics.jsonl")]
    assert tokens == [r["tokens_seen"] for r in read_metrics(straight / "metrics.jsonl")]


def test_checkpoints_hold_no_pickle_that_needs_full_unpickling(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=2, save_steps=2))
    for path in [out, out / "checkpoint-2"]:
        assert not (path / "training_args.bin").exists()
    from transformers.trainer_pt_utils import safe_globals  # numpy arrays only (the RNG state)

    pickled = sorted(p.name for p in (out / "checkpoint-2").glob("*.p*"))
    assert pickled == ["optimizer.pt", "rng_state.pth", "scheduler.pt"]
    with safe_globals():
        for name in pickled:
            torch.load(out / "checkpoint-2" / name, weights_only=True)


def test_checkpoint_files_skip_the_zip_crc_the_manifest_makes_redundant(tiny_model_dir, tmp_path):
    """torch.save writes the checkpoint's optimizer, scheduler and RNG files without CRC-32s (the manifest's
    SHA-256 covers them; the CRC was most of the time saving a large optimizer state took), torch.load reads
    them (resuming from them: the resume tests above), and saves outside a checkpoint keep their CRCs."""
    import zipfile

    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=2, save_steps=1, save_total_limit=5))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        records = zipfile.ZipFile(out / "checkpoint-1" / name).infolist()
        assert records and all(r.CRC == 0 for r in records if r.file_size), name
    state = torch.load(out / "checkpoint-1" / "optimizer.pt", weights_only=True)
    assert state["state"] and all(
        torch.isfinite(t).all() for s in state["state"].values() for t in s.values()
    )
    assert torch.serialization.get_crc32_options()  # restored after the checkpoint
    torch.save({"x": torch.ones(4)}, tmp_path / "plain.pt")
    assert any(r.CRC for r in zipfile.ZipFile(tmp_path / "plain.pt").infolist() if r.file_size)


def test_a_damaged_newest_checkpoint_is_skipped_and_rewritten(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=4, save_steps=2))
    (out / "tuneforge_finished.json").unlink()  # as if killed after writing checkpoint-4, before the end
    flip_byte(out / "checkpoint-4" / "adapter_model.safetensors", 200)
    run_stage(config(tiny_model_dir, out, max_steps=4, save_steps=2))
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint" in err and "checkpoint-4" in err and "corrupted" in err
    assert "resuming from" in err and "checkpoint-2 (step 2)" in err
    assert checkpoint.verify(out / "checkpoint-4") is None  # step 4 trained again and written whole


def test_explicit_resume_path_must_be_complete(tiny_model_dir, tmp_path):
    broken = tmp_path / "checkpoint-3"
    broken.mkdir()
    with pytest.raises(UserError, match="manifest.json is missing"):
        run_stage(config(tiny_model_dir, tmp_path / "run", resume_from_checkpoint=str(broken)))


def test_resume_refuses_a_checkpoint_of_a_different_method(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=2, save_steps=2))
    with pytest.raises(UserError, match="lora_rank: 4 -> 8"):
        run_stage(config(tiny_model_dir, out, max_steps=4, lora_rank=8))


def test_overwrite_output_dir_starts_afresh(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=2, save_steps=1))
    run_stage(config(tiny_model_dir, out, max_steps=3, save_steps=3, overwrite_output_dir=True))
    assert [c.step for c in checkpoint.list_checkpoints(out)] == [3]
    assert [s for s, _ in losses(out)] == [1, 2, 3]


def test_rerunning_a_finished_run_changes_nothing_and_more_steps_continue_it(
    tiny_model_dir, tmp_path, capsys
):
    from tuneforge.cli.main import main
    from tuneforge.config import dump_config
    from tuneforge.utils.errors import NothingToDo

    out = tmp_path / "run"
    run_stage(config(tiny_model_dir, out, max_steps=4, save_steps=2))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(NothingToDo, match="is finished \\(step 4\\)"):
        run_stage(config(tiny_model_dir, out, max_steps=4, save_steps=2))
    # the same from the command line: exit 0, a sentence, not a byte changed
    dump_config(config(tiny_model_dir, out, max_steps=4, save_steps=2), tmp_path / "cfg.yaml")
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    assert "Nothing was changed" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # asking for more continues it on purpose
    run_stage(config(tiny_model_dir, out, max_steps=6, save_steps=2))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r][-1] == 6


def test_an_output_dir_that_cannot_be_written_is_a_sentence_before_any_work(tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot be written .*nothing was trained or changed"):
        run_stage(config(tiny_model_dir, blocker / "run"))
