"""Job payloads: stored JSON <-> typed jobs, and what a payload that is no job says."""

from __future__ import annotations

import pytest

from app.store.payloads import EditJob, EvaluateJob, InvalidPayload, RevertJob, parse_payload


def test_the_json_the_api_always_stored_round_trips() -> None:
    edit = {"kind": "edit", "facts": [{"subject": "a"}], "method": "fe"}
    revert = {"kind": "revert", "version": "v2"}
    evaluate = {"kind": "evaluate", "version": "v1", "include_own_facts": False,
                "records": [], "data_file": "mcf.json", "limit": 5}
    for stored in (edit, revert, evaluate):
        assert parse_payload(stored).to_json() == stored


def test_types_and_defaults() -> None:
    assert parse_payload({"facts": [1]}) == EditJob(facts=[1])  # the oldest rows have no kind
    assert isinstance(parse_payload({"kind": "revert", "version": "v1"}), RevertJob)
    job = parse_payload({"kind": "evaluate", "version": "v1", "extra": "ignored"})
    assert job == EvaluateJob(version="v1") and job.include_own_facts and job.limit is None


def test_a_payload_that_is_no_job_says_why() -> None:
    with pytest.raises(InvalidPayload, match="unknown job kind 'explode'"):
        parse_payload({"kind": "explode"})
    with pytest.raises(InvalidPayload, match="invalid revert job: version: Field required"):
        parse_payload({"kind": "revert"})
