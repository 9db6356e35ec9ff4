"""A question as the model sees it, and its answer read from the next-token probabilities of A, B, C, D.

The prompt is LLaMA-Factory's evaluation prompt: the dev split's solved examples as earlier chat turns
(question and choices from the user, the letter from the assistant), the benchmark's instruction in front
of the first turn, rendered by the run's chat template. The model's answer is the letter whose token
(the last token of the letter encoded alone) is most probable next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.eval.benchmarks import CHOICES, Question

INSTRUCTIONS = {
    "en": ("The following are multiple choice questions (with answers) about {subject}.\n\n", "\nAnswer:"),
    "zh": ("以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "\n答案："),
}


def question_text(question: Question, lang: str) -> str:
    _, answer = INSTRUCTIONS[lang]
    choices = "".join(f"\n{letter}. {text}" for letter, text in zip(CHOICES, question.choices, strict=True))
    return question.question + choices + answer


def messages(question: Question, shots: list[Question], subject_name: str, lang: str) -> list[dict[str, str]]:
    """The chat that asks `question` after `shots` solved examples."""
    chat = []
    for shot in shots:
        chat += [
            {"role": "user", "content": question_text(shot, lang)},
            {"role": "assistant", "content": shot.answer},
        ]
    chat.append({"role": "user", "content": question_text(question, lang)})
    system, _ = INSTRUCTIONS[lang]
    chat[0] = {**chat[0], "content": system.format(subject=subject_name) + chat[0]["content"]}
    return chat


def choice_ids(tokenizer: Any) -> list[int]:
    return [tokenizer.encode(letter, add_special_tokens=False)[-1] for letter in CHOICES]


@dataclass
class Scored:
    predicted: str
    probabilities: list[float]  # of A, B, C, D, renormalised over the four


def score_batch(model: Any, prompts: list[list[int]], letters: list[int], pad_id: int) -> list[Scored]:
    """The letter each prompt's next token most likely is, in one right-padded forward pass."""
    import torch

    from tuneforge.data.collator import pad_rows

    ids = pad_rows(prompts, pad_id)
    mask = pad_rows([[1] * len(p) for p in prompts], 0)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    last = torch.tensor([len(p) - 1 for p in prompts], device=logits.device)
    picked = logits[torch.arange(len(prompts), device=logits.device), last][:, letters].float()
    probabilities = picked.softmax(-1).cpu()
    return [Scored(CHOICES[int(p.argmax())], [float(x) for x in p]) for p in probabilities]
