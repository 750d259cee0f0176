"""Fact-token location and target encoding for both tokenizer styles."""

from __future__ import annotations

import pytest

from bench.tiny import tiny_tokenizer
from editing.forward.tokens import continuation_ids, fact_token_index, prompt_ids, subject_span
from editing.requests import EditRequest, InvalidEditRequest, validate_requests


@pytest.mark.parametrize("style", ["bpe", "bos"])
@pytest.mark.parametrize("prefix", ["", "Because I. "])
def test_fact_token_is_the_subjects_last_token(style: str, prefix: str) -> None:
    tok = tiny_tokenizer(style)
    text, end = subject_span("The mother tongue of {} is", "Danielle Darrieux", prefix)
    assert text[end - len("Darrieux") : end] == "Darrieux"
    ids = prompt_ids(tok, text)
    index = fact_token_index(tok, text, end)
    # The decoded tokens up to the fact token end with the subject; one more token goes past it.
    upto = tok.decode(ids[: index + 1], skip_special_tokens=True)
    assert upto.rstrip().endswith("Darrieux")
    assert not tok.decode(ids[: index + 2], skip_special_tokens=True).rstrip().endswith("Darrieux")


def test_bos_tokenizer_counts_its_bos() -> None:
    tok = tiny_tokenizer("bos")
    text, end = subject_span("{} is a", "Paris")
    ids = prompt_ids(tok, text)
    assert ids[0] == tok.bos_token_id
    assert fact_token_index(tok, text, end) >= 1


def test_subject_at_start_without_bos() -> None:
    tok = tiny_tokenizer("bpe")
    text, end = subject_span("{} is a", "Paris")
    index = fact_token_index(tok, text, end)
    assert tok.decode(prompt_ids(tok, text)[: index + 1]) == "Paris"


@pytest.mark.parametrize("style", ["bpe", "bos"])
def test_continuation_ids_rebuild_the_joined_text(style: str) -> None:
    tok = tiny_tokenizer(style)
    prompt = "The mother tongue of Danielle Darrieux is"
    head, tail = prompt_ids(tok, prompt), continuation_ids(tok, prompt, "English")
    assert tail, "a target has at least one token"
    assert tok.decode(head + tail, skip_special_tokens=True) == prompt + " English"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (EditRequest("", "The {} is", "x"), "subject"),
        (EditRequest("  ", "The {} is", "x"), "subject"),
        (EditRequest("Paris", "The capital is", "x"), "prompt"),
        (EditRequest("Paris", "{} and {} are", "x"), "prompt"),
        (EditRequest("Paris", "The {} is", ""), "target_new"),
        (EditRequest("Paris", "The {} is", " \t"), "target_new"),
    ],
)
def test_bad_requests_name_the_field(request_: EditRequest, field: str) -> None:
    with pytest.raises(InvalidEditRequest) as info:
        validate_requests([EditRequest("Rome", "{} is in", "Italy"), request_])
    assert info.value.field == field
    assert info.value.index == 1
    assert "request 1" in str(info.value)


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(InvalidEditRequest):
        validate_requests([])
