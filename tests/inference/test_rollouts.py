"""Rollouts through the engine's decoding core: at a near-zero temperature they are the greedy answers
`model.generate` gives (left padding, KV cache, positions and rows leaving the batch all right), answers end
at the first end token or at max_new_tokens, and a real sampling temperature follows the model's
probabilities."""

import torch

from tests.helpers import tiny_llama, tiny_tokenizer
from tuneforge.inference.rollouts import sample_rollouts
from tuneforge.train.rl import generate_answers


def model_and_tokenizer(seed: int = 0):
    tokenizer = tiny_tokenizer()
    model = tiny_llama(
        vocab_size=len(tokenizer),
        seed=seed,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model.eval(), tokenizer


def test_near_zero_temperature_gives_generates_greedy_answers():
    model, tokenizer = model_and_tokenizer()
    prompts = [
        [5, 9, 11],
        [7, 3, 2, 8, 20, 21, 4],
        [30],
        [12, 40, 41, 42, 43],
    ]  # different lengths: left padding
    eos = int(model(torch.tensor([[5, 9, 11]])).logits[0, -1].argmax())  # a token the model does produce
    tokenizer.eos_token_id = eos
    ours = sample_rollouts(model, prompts, 2, 12, 1e-6, tokenizer.pad_token_id, eos)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(p).flip(0) for p in prompts],
                batch_first=True,
                padding_value=tokenizer.pad_token_id,
            ).flip(1),
            attention_mask=torch.nn.utils.rnn.pad_sequence(
                [torch.ones(len(p), dtype=torch.long) for p in prompts], batch_first=True
            ).flip(1),
            do_sample=False,
            max_new_tokens=12,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
        )
    expected = []
    for row in out[:, max(len(p) for p in prompts) :].tolist():
        expected.append(row[: row.index(eos) + 1] if eos in row else row)
    assert ours == [e for e in expected for _ in range(2)]
    assert ours[0][-1] == eos and any(len(a) == 12 and eos not in a for a in ours)  # both endings occur


def test_sampling_follows_the_models_probabilities():
    model, tokenizer = model_and_tokenizer(seed=3)
    prompt = [5, 9, 11]
    with torch.no_grad():
        probs = (model(torch.tensor([prompt])).logits[0, -1] / 0.7).softmax(-1)
    torch.manual_seed(0)
    first = [a[0] for a in sample_rollouts(model, [prompt], 4000, 1, 0.7, tokenizer.pad_token_id, -1)]
    counts = torch.bincount(torch.tensor(first), minlength=probs.shape[0]).float() / len(first)
    top = probs.topk(5).indices
    assert torch.allclose(counts[top], probs[top], atol=0.03)


def test_both_backends_sample_answers_of_the_same_shape():
    model, tokenizer = model_and_tokenizer()
    prompts = [[5, 9, 11], [30, 31]]
    generated = generate_answers(model, tokenizer, prompts, 3, 6, 1.0)
    ours = sample_rollouts(model, prompts, 3, 6, 1.0, tokenizer.pad_token_id, tokenizer.eos_token_id)
    for answers in (generated, ours):
        assert len(answers) == 6 and all(1 <= len(a) <= 6 for a in answers)
        assert all(tokenizer.eos_token_id not in a[:-1] for a in answers)
