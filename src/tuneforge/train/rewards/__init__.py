"""Reward functions for GRPO: built-in ones by name, or your own by dotted path (`mypkg.rewards:fn`)
or by file (`rewards/math.py:fn`).

A reward function takes the prompts, the completions and, as keyword lists, the dataset's other
columns (here `answer`: the reference answer of each row), and returns one float per completion:
`fn(prompts: list[str], completions: list[str], answer: list[str], **kwargs) -> list[float]`
(the same signature TRL uses, so functions written for it work here).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.utils.errors import UserError

RewardFunc = Callable[..., list[float]]


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split()).rstrip(".")


def exact_match(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion equals the reference answer (case, spacing and a final period ignored)."""
    return [float(_normalise(c) == _normalise(a)) for c, a in zip(completions, answer, strict=True)]


def contains_answer(
    prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any
) -> list[float]:
    """1.0 when the reference answer appears in the completion."""
    return [float(_normalise(a) in _normalise(c)) for c, a in zip(completions, answer, strict=True)]


def make_format_reward(pattern: str) -> RewardFunc:
    """1.0 when the whole completion matches `pattern` (a Python regex, DOTALL)."""
    compiled = re.compile(pattern, re.DOTALL)

    def format_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [float(compiled.fullmatch(c.strip()) is not None) for c in completions]

    return format_reward


def make_length_reward(target: int) -> RewardFunc:
    """1.0 at `target` characters, falling linearly to 0 at 0 and 2 x target characters."""

    def length_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        return [max(0.0, 1 - abs(len(c) - target) / target) for c in completions]

    return length_reward


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


def load_reward_funcs(names: list[str], format_regex: str | None, length_target: int) -> list[RewardFunc]:
    """Resolve `reward_funcs` entries: exact_match, contains_answer, format, length, module:function or
    path/to/file.py:function."""
    funcs: list[RewardFunc] = []
    for name in names:
        if name == "exact_match":
            funcs.append(exact_match)
        elif name == "contains_answer":
            funcs.append(contains_answer)
        elif name == "format":
            if not format_regex:
                raise UserError(
                    "reward_funcs 'format' needs reward_format_regex (e.g. '<think>.*</think>.*')"
                )
            funcs.append(make_format_reward(format_regex))
        elif name == "length":
            funcs.append(make_length_reward(length_target))
        elif ":" in name:
            funcs.append(_imported_reward(name))
        else:
            raise UserError(
                f"unknown reward function '{name}': use exact_match, contains_answer, format, length, "
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
) -> Any:
    """The summed reward of each completion `[n]` (float tensor), given token ids and reference answers."""
    import torch

    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    total = torch.zeros(len(texts))
    for fn in funcs:
        total += torch.tensor(fn(prompts=prompt_texts, completions=texts, answer=answers), dtype=torch.float)
    return total
