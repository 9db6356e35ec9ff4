import pytest
import torch

from tests.helpers import tiny_llama
from tuneforge.config import FinetuningArguments, ModelArguments
from tuneforge.data.tokenized import IGNORE_INDEX
from tuneforge.model.adapters import apply_adapter
from tuneforge.train.trainer import answer_only_loss, split_decoder_and_head


def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, 128, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX  # prompt
    labels[mask == 0] = IGNORE_INDEX  # padding
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("wrap", ["none", "lora"])
def test_answer_only_loss_equals_the_full_logits_loss(wrap):
    model = tiny_llama()
    if wrap == "lora":
        model = apply_adapter(model, FinetuningArguments(lora_rank=4), ModelArguments())
        assert split_decoder_and_head(model) is not None
    inputs = batch()
    expected = model(**inputs).loss
    got = answer_only_loss(model, inputs, None)
    torch.testing.assert_close(got, expected)


def test_loss_with_num_items_is_sum_over_the_accumulated_count():
    model = tiny_llama()
    inputs = batch()
    n = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
    mean = answer_only_loss(model, inputs, None)
    torch.testing.assert_close(answer_only_loss(model, inputs, torch.tensor(2 * n)), mean / 2)


def test_gradients_match_the_full_logits_loss():
    inputs = batch()
    reference, ours = tiny_llama(seed=3), tiny_llama(seed=3)
    reference(**inputs).loss.backward()
    answer_only_loss(ours, inputs, None).backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), ours.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
