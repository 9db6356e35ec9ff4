"""Reward functions for GRPO and PPO: built-in ones by name (one file each in this folder, `length.py` is the
one to copy), or your own by dotted path (`mypkg.rewards:fn`) or by file (`rewards/math.py:fn`).

A reward function takes the prompts, the completions and, as keyword lists, the dataset's other
columns (here `answer`: the reference answer of each row), and returns one float per completion:
`fn(prompts: list[str], completions: list[str], answer: list[str], **kwargs) -> list[float]`
(the same signature TRL uses, so functions written for it work here).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.config.plugins import Params, family
from tuneforge.utils.errors import UserError

RewardFunc = Callable[..., list[float]]
REWARDS = family("reward_funcs")


def register_reward(name: str, params: type[Params] | None = None) -> Callable[[Any], Any]:
    """Register `make(finetuning_args) -> RewardFunc` as the reward `name` (with the keys it reads)."""
    return REWARDS.register(name, params)


def _imported_reward(name: str) -> RewardFunc:
    """`module:function` (imported from sys.path) or `path/to/file.py:function` (that file, loaded as a module)."""
    target, _, attr = name.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise UserError(f"reward function '{name}': the file {path} does not exist")
            spec = importlib.util.spec_from_file_location(f"tuneforge_rewards_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        fn = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as err:
        raise UserError(f"reward function '{name}' could not be loaded: {err}") from None
    if not callable(fn):
        raise UserError(f"reward function '{name}' is not callable")
    return fn


def load_reward_funcs(names: list[str], finetuning: Any) -> list[RewardFunc]:
    """Resolve `reward_funcs` entries: a registered reward (accuracy, exact_match, contains_answer, format, length, or
    any file added to this folder), module:function or path/to/file.py:function."""
    funcs: list[RewardFunc] = []
    known = REWARDS.members()
    for name in names:
        if name in known:
            funcs.append(known[name].target(finetuning))
        elif ":" in name:
            funcs.append(_imported_reward(name))
        else:
            raise UserError(
                f"unknown reward function '{name}': use {', '.join(sorted(known))}, "
                "a dotted path module:function or a file path/to/rewards.py:function"
            )
    if not funcs:
        raise UserError("stage grpo needs reward_funcs (e.g. reward_funcs: exact_match)")
    return funcs


def score_completions(
    funcs: list[RewardFunc],
    tokenizer: Any,
    prompts: list[list[int]],
    completions: list[list[int]],
    answers: list[str],
    weights: list[float] | None = None,
) -> Any:
    """The weighted sum of the rewards of each completion `[n]` (float tensor; `weights` default 1 each),
    given token ids and reference answers."""
    import torch

    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    total = torch.zeros(len(texts))
    for fn, weight in zip(funcs, weights or [1.0] * len(funcs), strict=True):
        scores = fn(prompts=prompt_texts, completions=texts, answer=answers)
        total += weight * torch.tensor(scores, dtype=torch.float)
    return total
