import torch

from tests.helpers import tiny_llama
from tuneforge.config import DataArguments
from tuneforge.data.collator import NeatPackingCollator, PaddingCollator
from tuneforge.data.packing import pack_examples, training_rows
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample
from tuneforge.train.trainer import answer_only_loss


def rows(lengths=(5, 9, 14, 3, 11, 7, 6, 12)) -> list[TokenizedExample]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n, length in enumerate(lengths):
        ids = torch.randint(3, 128, (length,), generator=g).tolist()
        prompt = length // 3
        out.append(TokenizedExample(ids, [IGNORE_INDEX] * prompt + ids[prompt:], source=f"row{n}"))
    return out


def test_every_row_lands_once_within_capacity_and_bins_are_few():
    examples = rows()
    packed = pack_examples(examples, capacity=20, neat=True)
    assert sorted(s for p in packed for s in p.sources) == sorted(e.source for e in examples)
    assert all(len(p.input_ids) <= 20 for p in packed)
    total = sum(len(e.input_ids) for e in examples)
    assert len(packed) == -(-total // 20)  # as few sequences as the total length allows here
    for p in packed:
        starts = [i for i, pos in enumerate(p.position_ids) if pos == 0]
        assert len(starts) == len(p.sources)
        assert all(p.labels[s] == IGNORE_INDEX for s in starts)


def unpacked_token_weighted_loss(model, examples) -> torch.Tensor:
    total, count = torch.tensor(0.0), 0
    for e in examples:
        batch = PaddingCollator(0)([{"input_ids": e.input_ids, "labels": e.labels}])
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total = total + answer_only_loss(model, batch, None) * n
        count += n
    return total / count


def test_neat_packed_loss_equals_the_token_weighted_loss_of_the_rows_unpacked():
    model = tiny_llama(seed=5)
    examples = rows()
    packed = [p.as_row() for p in pack_examples(examples, capacity=20, neat=True)]
    batch = NeatPackingCollator(0)(packed)
    assert "attention_mask" not in batch and int(batch["num_tokens"].sum()) == sum(
        len(e.input_ids) for e in examples
    )
    with torch.no_grad():
        expected = unpacked_token_weighted_loss(model, examples)
        got = answer_only_loss(model, batch, None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_plain_packing_lets_rows_see_each_other_so_its_loss_differs():
    model = tiny_llama(seed=5)
    examples = rows()
    packed = [p.as_row() for p in pack_examples(examples, capacity=20, neat=False)]
    with torch.no_grad():
        expected = unpacked_token_weighted_loss(model, examples)
        got = answer_only_loss(model, PaddingCollator(0)(packed), None)
    assert not torch.allclose(got, expected, atol=1e-4)


def test_packing_defaults_on_for_pretraining_only():
    examples = rows()
    args = DataArguments(cutoff_len=20)
    assert len(training_rows(examples, args, "sft", 0)[0]) == len(examples)
    assert len(training_rows(examples, args, "pt", 0)[0]) < len(examples)
    packed, collator = training_rows(examples, args.model_copy(update={"neat_packing": True}), "sft", 0)
    assert len(packed) < len(examples) and isinstance(collator, NeatPackingCollator)
