"""Each patch in tuneforge/model/patches: the upstream bug is still there without it (this fails
once upstream fixes it, so the patch can go), and the patch fixes it."""

import pytest
import torch

from tests.helpers import tiny_llama
from tuneforge.config import FinetuningArguments, ModelArguments
from tuneforge.model.adapters import apply_adapter
from tuneforge.model.patches import peft_prompt_generation


def generation_error(model) -> float:
    """Largest gap between generate's scores and a full forward pass over the same tokens."""
    ids = torch.randint(3, 128, (1, 8), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=3,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
        worst = 0.0
        for k, scores in enumerate(out.scores):
            seq = out.sequences[:, : ids.shape[1] + k]
            forward = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[:, -1]
            worst = max(worst, (scores - forward).abs().max().item())
    return worst


@pytest.mark.parametrize("method", ["prefix", "prompt", "p_tuning"])
def test_prompt_learning_generation_patch(method):
    def build():
        model = apply_adapter(
            tiny_llama(), FinetuningArguments(finetuning_type=method, num_virtual_tokens=4), ModelArguments()
        )
        with torch.no_grad():  # a trained-looking prompt, so that ignoring it shows
            for p in model.prompt_encoder.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 3)
        return model

    unpatched = build()
    if peft_prompt_generation.needed(unpatched):
        assert generation_error(unpatched) > 1e-3, "upstream fixed this: remove the patch and its guard"
    patched = build()
    peft_prompt_generation.apply(patched)
    assert generation_error(patched) < 1e-4
