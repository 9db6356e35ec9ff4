"""The compact token table gives back exactly the rows put in, in any selection."""

import pytest

from tuneforge.data.table import ExampleRows, TokenTable
from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedExample


def rows() -> list[TokenizedExample]:
    return [
        TokenizedExample([5, 6, 7], [IGNORE_INDEX, 6, 7], "f:1"),
        TokenizedExample([49151], [49151], "f:2", truncated=True),
        TokenizedExample([1, 2, 3, 4], [IGNORE_INDEX] * 2 + [3, 4], "f:3"),
    ]


def test_rows_come_back_exactly_and_in_any_selection():
    table = TokenTable.from_examples(rows())
    assert list(table) == rows() and len(table) == 3
    assert table[-1] == rows()[2] and table.token_count() == 8
    assert table.lengths().tolist() == [3, 1, 4]
    assert list(table.take([2, 0])) == [rows()[2], rows()[0]]
    assert list(table[1:]) == rows()[1:] and len(table.take([])) == 0
    with pytest.raises(IndexError):
        table[3]
    assert TokenTable.from_examples(table) is table


def test_trainer_rows_carry_their_index():
    trainer_rows = ExampleRows(TokenTable.from_examples(rows()))
    assert trainer_rows[1] == {"input_ids": [49151], "labels": [49151], "sample_id": 1}
    assert len(trainer_rows) == 3 and isinstance(trainer_rows[0]["input_ids"], list)
