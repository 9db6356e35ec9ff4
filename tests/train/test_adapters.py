import pytest
import torch

from tests.helpers import tiny_llama
from tuneforge.config import FinetuningArguments, ModelArguments
from tuneforge.data.collator import PaddingCollator
from tuneforge.model.adapters import apply_adapter, count_parameters
from tuneforge.model.adapters.lora import find_linear_targets
from tuneforge.utils.errors import UserError


def rows(n: int = 8) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(3, 128, (10 + i % 3,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:]})
    return out


def train_steps(model, steps: int = 6, tmp_path=None) -> list[float]:
    from transformers import TrainingArguments

    from tuneforge.train.trainer import TuneforgeTrainer

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_steps=steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    trainer = TuneforgeTrainer(model=model, args=args, train_dataset=rows(), data_collator=PaddingCollator(0))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def fixed_batch_loss(model) -> float:
    from tuneforge.train.trainer import answer_only_loss

    with torch.no_grad():
        return float(answer_only_loss(model, PaddingCollator(0)(rows()), None))


def test_lora_steps_change_lora_weights_and_leave_the_base_alone(tmp_path):
    model = apply_adapter(tiny_llama(), FinetuningArguments(lora_rank=4), ModelArguments())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_before = fixed_batch_loss(model)
    train_steps(model, tmp_path=tmp_path)
    assert fixed_batch_loss(model) < loss_before
    changed_lora = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])]
    changed_base = [
        n for n, p in model.named_parameters() if "lora_" not in n and not torch.equal(p, before[n])
    ]
    assert changed_lora and not changed_base
    # lora_B starts at zero, so every LoRA pair must have moved
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_lora_target_all_finds_every_linear_layer_but_the_head():
    assert find_linear_targets(tiny_llama()) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]


def test_lora_target_names_are_checked():
    with pytest.raises(UserError, match="q_proj"):
        apply_adapter(tiny_llama(), FinetuningArguments(lora_target="query_key_value"), ModelArguments())


def test_freeze_trains_only_the_last_layers(tmp_path):
    model = apply_adapter(
        tiny_llama(),
        FinetuningArguments(finetuning_type="freeze", freeze_trainable_layers=1),
        ModelArguments(),
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, steps=2, tmp_path=tmp_path)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != (n in trainable), n


def test_full_trains_everything():
    model = apply_adapter(tiny_llama(), FinetuningArguments(finetuning_type="full"), ModelArguments())
    trainable, total = count_parameters(model)
    assert trainable == total
