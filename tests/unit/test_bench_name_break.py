"""bench.name_break's position classes and its count of broken names, on hand-built rows."""

from __future__ import annotations

import torch

from bench.name_break import broken_share, masks, name_rows
from editing.requests import EditRequest
from tests.tiny import tiny_tokenizer


def test_position_classes_split_the_context_and_the_name() -> None:
    rows = [([10, 11, 12, 13, 14, 15], 4, [1, 2])]  # subject = ids[4:], mentioned at 1-2
    kinds = masks(rows, width=7)
    assert kinds["all"][0].tolist() == [True] * 6 + [False]
    assert kinds["before_subject"][0, :4].all() and not kinds["before_subject"][0, 4:].any()
    assert kinds["earlier_mention"][0].nonzero().flatten().tolist() == [1, 2]
    assert kinds["other_context"][0].nonzero().flatten().tolist() == [0, 3]
    assert kinds["subject_earlier"][0].nonzero().flatten().tolist() == [4]
    assert kinds["subject_last"][0].nonzero().flatten().tolist() == [5]


def test_broken_share_counts_only_names_the_base_predicts_twice() -> None:
    rows = [([1, 2, 7, 8, 9], 2, []), ([1, 2, 7, 8], 2, []), ([1, 5, 6], 1, [])]
    base = [torch.tensor([7, 8, 9]), torch.tensor([7, 8]), torch.tensor([5, 0])]
    edited = [torch.tensor([7, 8, 0]), torch.tensor([7, 8]), torch.tensor([0, 0])]
    share, eligible = broken_share(rows, base, edited)
    assert eligible == 2 and share == 50.0  # the third predicts one name token only


def test_name_rows_find_the_questions_mention_of_the_subject() -> None:
    tok = tiny_tokenizer("bpe")
    req = EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English",
                      question="What is the mother tongue of Danielle Darrieux?")
    ids, start, mentions = name_rows(tok, [req])[0]
    assert tok.decode(ids[start:]).strip() == "Danielle Darrieux"
    assert mentions and max(mentions) < start
    assert "Darrieux" in tok.decode([ids[i] for i in mentions])
