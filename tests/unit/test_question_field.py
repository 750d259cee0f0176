"""The optional ``question`` of a fact: validated alike in the editing core, the data files and
the HTTP schema, and carried from the API's fact to the edit request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.api.schemas import Fact
from editing.evaluate.data import DataError, parse_records
from editing.requests import EditRequest, InvalidEditRequest

BASE = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is", "target_new": "English"}


def test_a_blank_question_is_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidEditRequest) as exc:
        EditRequest(**BASE, question="   ").validate(3)
    assert exc.value.field == "question" and "request 3" in str(exc.value)
    with pytest.raises(DataError, match="question"):
        parse_records([{**BASE, "question": " "}])
    with pytest.raises(DataError, match="question"):
        parse_records([{**BASE, "question": 7}])
    with pytest.raises(ValidationError, match="question"):
        Fact(**BASE, question="  ")


def test_the_question_travels_from_the_api_and_the_data_file_to_the_request() -> None:
    question = "What is the mother tongue of Danielle Darrieux?"
    assert Fact(**BASE, question=question).to_request().question == question
    assert parse_records([{**BASE, "question": question}])[0].request.question == question
    assert EditRequest.from_record({**BASE, "question": question}).question == question
    assert Fact(**BASE).to_request().question is None
