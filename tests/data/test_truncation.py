"""LLaMA-Factory's proportional truncation, checked by hand on small lists."""

from tuneforge.data.tokenized import IGNORE_INDEX
from tuneforge.data.truncation import infer_seqlen, truncate_turns, turn_pieces


def test_infer_seqlen_three_cases_by_hand():
    # short target (10 * 2 < 100): the target may take the whole budget, the prompt the rest
    assert infer_seqlen(200, 10, 100) == (90, 10)
    # long target, short prompt (20 * 2 < 100): the target gets 100 - 20
    assert infer_seqlen(20, 300, 100) == (20, 80)
    # both long: in proportion, 100 * 300 / 400 = 75 for the target, 25 for the prompt
    assert infer_seqlen(100, 300, 100) == (25, 75)
    # nothing left: nothing kept
    assert infer_seqlen(5, 5, 0) == (0, 0)


def test_turn_pieces_split_prompts_and_targets():
    # two answers at [3, 5) and [8, 10) in a 12-token row: the last target runs to the end
    assert turn_pieces(12, [(3, 5), (8, 10)]) == [((0, 3), (3, 5)), ((5, 8), (8, 12))]


def test_long_answer_keeps_its_prompt_and_its_start():
    ids = list(range(30))  # prompt of 10 tokens, answer of 20
    labels = [IGNORE_INDEX] * 10 + ids[10:]
    new_ids, new_labels = truncate_turns(ids, labels, [(10, 30)], cutoff_len=16)
    # 20 * 2 >= 16 and 10 * 2 >= 16: target gets int(16 * 20 / 30) = 10, prompt 6
    assert new_ids == list(range(6)) + list(range(10, 20))
    assert new_labels == [IGNORE_INDEX] * 6 + list(range(10, 20))
    # cutting at the end instead would have left no answer token at all for cutoff 10
    kept_ids, kept_labels = truncate_turns(ids, labels, [(10, 30)], cutoff_len=10)
    assert len(kept_ids) == 10 and any(label != IGNORE_INDEX for label in kept_labels)


def test_later_turns_get_what_is_left():
    ids = list(range(20))  # turn 1: prompt 0-3, answer 4-7; turn 2: prompt 8-11, answer 12-19
    labels = [IGNORE_INDEX if i < 4 or 8 <= i < 12 else i for i in ids]
    new_ids, new_labels = truncate_turns(ids, labels, [(4, 8), (12, 20)], cutoff_len=12)
    # turn 1 fits whole (8 tokens); turn 2 has 4 left: infer_seqlen(4, 8, 4) -> target int(4*8/12)=2, prompt 2
    assert new_ids == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13]
    assert len(new_labels) == 12 and new_labels[-2:] == [12, 13]
