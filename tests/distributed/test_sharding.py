"""DeepSpeed ZeRO on CPU (DeepSpeed's CPU accelerator, gloo): LLaMA-Factory's `deepspeed: ds_z*_config.json`
trains two processes exactly as one process of the doubled batch, saves its sharded states in tuneforge's
atomic checkpoints and resumes from them (ZeRO-2 with offload and DPO under ZeRO-3: test_ddp.py; full
tuning under ZeRO-3: LLaMA-Factory's qwen3_full_sft.yaml in tests/compat)."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file

from tests.distributed.test_ddp import REPO, losses, train
from tests.train.test_sft_stage import tiny_run_keys
from tuneforge.config import load_config
from tuneforge.train.parallel import check_sharding
from tuneforge.utils.errors import UserError

SHIPPED = REPO / "examples" / "deepspeed"
TWO = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}


def largest_difference(a, b, name: str) -> float:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_zero3_lora_trains_as_one_process_and_resumes_from_its_sharded_checkpoint(
    tiny_model_dir, tmp_path, batch4_run
):
    pytest.importorskip("deepspeed")
    home = {"TUNEFORGE_HOME": str(tmp_path / "home")}
    out = tmp_path / "zero3"
    # with checkpointing against the reference's none: the same losses (keep_attention falls back to full)
    ds = {
        "deepspeed": str(SHIPPED / "ds_z3_config.json"),
        "per_device_train_batch_size": 2,
        "gradient_checkpointing": True,
    }
    zero = train(tiny_model_dir, out, {**home, **TWO}, **ds)
    assert zero.returncode == 0, zero.stderr[-5000:]
    # the weights were loaded into their partitions and are counted whole
    assert "training 4,096 of 3,168,416 parameters" in zero.stderr
    assert "keep_attention recomputes whole layers under ZeRO-3" in zero.stderr
    assert "keep their attention outputs" not in zero.stderr
    reference = losses(batch4_run)
    for (_, loss_a, norm_a), (_, loss_b, norm_b) in zip(reference, losses(out), strict=True):
        assert loss_b == pytest.approx(loss_a, abs=1e-5) and norm_b == pytest.approx(norm_a, abs=1e-5)
    assert largest_difference(batch4_run, out, "adapter_model.safetensors") < 1e-5  # gathered to save
    shards = {p.name for p in (out / "checkpoint-3" / "global_step3").iterdir()}
    assert {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    } <= shards
    manifest = json.loads((out / "checkpoint-3" / "manifest.json").read_text())["files"]
    assert "global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt" in manifest  # in the atomic checkpoint

    # as if killed after step 3: the newest checkpoint and the end of the run are gone; the same command resumes
    shutil.rmtree(out / "checkpoint-6")
    (out / "tuneforge_finished.json").unlink()
    again = train(tiny_model_dir, out, {**home, **TWO}, **ds)
    assert again.returncode == 0, again.stderr[-5000:]
    assert "resuming from" in again.stderr and "checkpoint-3" in again.stderr
    assert [loss for _, loss, _ in losses(out)] == pytest.approx([loss for _, loss, _ in reference], abs=1e-5)
    assert largest_difference(batch4_run, out, "adapter_model.safetensors") < 1e-5


def test_the_shipped_configs_are_llamafactorys_shape_with_auto_values():
    stages = {}
    for path in sorted(SHIPPED.glob("ds_z*_config.json")):
        data = json.loads(path.read_text())
        assert data["train_micro_batch_size_per_gpu"] == data["gradient_accumulation_steps"] == "auto"
        stages[path.name] = data["zero_optimization"]["stage"]
    assert stages == {"ds_z0_config.json": 0, "ds_z2_config.json": 2, "ds_z2_offload_config.json": 2,
                      "ds_z3_config.json": 3, "ds_z3_offload_config.json": 3}  # fmt: skip


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({"deepspeed": "nowhere/ds_z3_config.json"}, "does not exist .* examples/deepspeed/"),
        ({"deepspeed": "{bad}"}, "cannot be read as JSON"),
        ({"deepspeed": "{stage5}"}, r"zero_optimization.stage 0, 1, 2 or 3 \(found 5\)"),
        (
            {"deepspeed": str(SHIPPED / "ds_z2_config.json"), "fsdp": "full_shard"},
            "DeepSpeed or FSDP, not both",
        ),
        ({"fsdp": "full_shard", "loraplus_lr_ratio": 16}, "LoRA\\+ builds its own optimizer"),
        (
            {"deepspeed": str(SHIPPED / "ds_z3_config.json"), "use_galore": True, "finetuning_type": "full"},
            "do not run under DeepSpeed or FSDP",
        ),
        (
            {"fsdp": "full_shard", "stage": "online_dpo", "reward_model": "saves/rm"},
            "online_dpo with a LoRA reward model switches adapters",
        ),
    ],  # fmt: skip
)
def test_sharding_settings_that_cannot_run_are_refused_naming_the_key(
    keys, expected, tiny_model_dir, tmp_path
):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "stage5.json").write_text('{"zero_optimization": {"stage": 5}}')
    if "deepspeed" in keys:
        keys["deepspeed"] = keys["deepspeed"].format(
            bad=tmp_path / "bad.json", stage5=tmp_path / "stage5.json"
        )
    flat = tiny_run_keys(tiny_model_dir, tmp_path / "out", **keys)
    cfg = load_config(None, [f"{k}={v}" for k, v in flat.items()])
    with pytest.raises(UserError, match=expected):
        check_sharding(cfg)


def test_fsdp_keys_reach_the_trainer_as_llamafactory_passes_them(tiny_model_dir, tmp_path, capsys):
    """FSDP is accelerate's (on GPUs); the keys go to transformers unchanged, and on a CPU the run says that
    its processes train as plain data parallelism."""
    from tuneforge.train.arguments import to_hf_arguments

    (tmp_path / "fsdp.json").write_text(json.dumps({"fsdp_version": 2, "reshard_after_forward": True}))
    flat = tiny_run_keys(
        tiny_model_dir, tmp_path / "out", fsdp="full_shard auto_wrap", fsdp_config=tmp_path / "fsdp.json"
    )
    args = to_hf_arguments(load_config(None, [f"{k}={v}" for k, v in flat.items()]))
    assert args.fsdp and args.fsdp_config["version"] == 2 and args.fsdp_config["reshard_after_forward"]
    import torch

    if not torch.cuda.is_available():
        assert "FSDP on GPUs only" in capsys.readouterr().err
