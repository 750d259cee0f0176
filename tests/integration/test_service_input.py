"""Bad requests get the right 4xx, a JSON message naming the field, and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import save_tiny_model
from tests.integration.service_support import LiveServer, live_service, tiny_settings

GOOD_FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
             "target_new": "English"}
MAX_BATCH = 8
MAX_BODY = 64_000


def fact(**changes: Any) -> dict[str, Any]:
    return {**GOOD_FACT, **changes}


def edits(*facts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"facts": list(facts), **extra}


# (name, method, path, json body | raw bytes, expected status, field named in the message)
CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("no body", "POST", "/edits", None, 422, "body"),
    ("facts missing", "POST", "/edits", {}, 422, "facts"),
    ("facts not a list", "POST", "/edits", {"facts": "x"}, 422, "facts"),
    ("empty batch", "POST", "/edits", edits(), 422, "facts"),
    ("subject missing", "POST", "/edits",
     edits({"prompt": "The mother tongue of {} is", "target_new": "English"}), 422,
     "facts[0].subject"),
    ("target_new missing", "POST", "/edits",
     edits({"subject": "A", "prompt": "{} is"}), 422, "facts[0].target_new"),
    ("subject wrong type", "POST", "/edits", edits(fact(subject=5)), 422, "facts[0].subject"),
    ("prompt without slot", "POST", "/edits", edits(fact(prompt="The mother tongue is")), 422,
     "facts[0].prompt"),
    ("prompt with two slots", "POST", "/edits", edits(fact(prompt="{} and {} speak")), 422,
     "facts[0].prompt"),
    ("prompt with a named field", "POST", "/edits", edits(fact(prompt="{name} of {} is")), 422,
     "facts[0].prompt"),
    ("subject is a template", "POST", "/edits", edits(fact(subject="{}")), 422,
     "facts[0].subject"),
    ("empty subject", "POST", "/edits", edits(fact(subject="")), 422, "facts[0].subject"),
    ("blank target", "POST", "/edits", edits(fact(target_new="   ")), 422,
     "facts[0].target_new"),
    ("10 kB subject", "POST", "/edits", edits(fact(subject="x" * 10_240)), 422,
     "facts[0].subject"),
    ("control character", "POST", "/edits", edits(fact(subject="Dani\x00elle")), 422,
     "facts[0].subject"),
    ("escape character in target", "POST", "/edits", edits(fact(target_new="Eng\x1b[31m")),
     422, "facts[0].target_new"),
    ("lone surrogate", "POST", "/edits", b'{"facts": [{"subject": "\\ud800", "prompt": '
     b'"{} is", "target_new": "x"}]}', 422, "facts[0].subject"),
    ("unknown field (typo)", "POST", "/edits",
     edits({"subject": "A", "prompt": "{} is", "target": "x"}), 422, "facts[0].target"),
    ("batch over the limit", "POST", "/edits", edits(*[GOOD_FACT] * (MAX_BATCH + 1)), 422,
     "facts"),
    ("body over the byte limit", "POST", "/edits",
     edits(*[fact(subject="y" * 1900)] * 40), 413, "body"),
    ("malformed JSON", "POST", "/edits", b'{"facts": [', 422, "body"),
    ("invalid UTF-8", "POST", "/edits", b'{"facts": [{"subject": "\xff\xfe"}]}', 400, "body"),
    ("bad idempotency key", "POST", "/edits", edits(GOOD_FACT, idempotency_key="a b/c"), 422,
     "idempotency_key"),
    ("unknown method", "POST", "/edits", edits(GOOD_FACT, method="rome"), 422, "method"),
    ("unknown job", "GET", "/edits/0123456789abcdef", None, 404, "job_id"),
    ("job id with bad characters", "GET", "/edits/..%2F..", None, 404, ""),
    ("unknown version", "GET", "/versions/v999", None, 404, "version"),
    ("rollback to unknown version", "POST", "/versions/v999/rollback", None, 404, "version"),
    ("revert of the base", "POST", "/versions/v0/revert", None, 409, "version"),
    ("revert of unknown version", "POST", "/versions/nope/revert", None, 404, "version"),
    ("evaluate the base with nothing", "POST", "/versions/v0/evaluate", {}, 422, "records"),
    ("evaluate a file outside shared data", "POST", "/versions/v0/evaluate",
     {"data_file": "../secrets.json"}, 422, "data_file"),
    ("score without candidates", "POST", "/score", {"prompt": "Hi", "candidates": []}, 422,
     "candidates"),
    ("score on unknown version", "POST", "/score",
     {"prompt": "Hi", "candidates": ["x"], "version": "v42"}, 404, "version"),
    ("score with too many candidates", "POST", "/score",
     {"prompt": "Hi", "candidates": ["x"] * 33}, 422, "candidates"),
    ("generate zero tokens", "POST", "/generate", {"prompt": "Hi", "max_new_tokens": 0}, 422,
     "max_new_tokens"),
    ("generate too many tokens", "POST", "/generate", {"prompt": "Hi", "max_new_tokens": 10**6},
     422, "max_new_tokens"),
    ("generate with empty prompt", "POST", "/generate", {"prompt": ""}, 422, "prompt"),
    ("generate beyond the context", "POST", "/generate",
     {"prompt": "word " * 390, "max_new_tokens": 200}, 422, "prompt"),
    ("next-tokens k too large", "POST", "/next-tokens", {"prompt": "Hi", "k": 10_000}, 422,
     "k"),
    ("version id with bad characters", "POST", "/score",
     {"prompt": "Hi", "candidates": ["x"], "version": "v1; drop"}, 422, "version"),
    ("wrong method", "DELETE", "/versions", None, 405, ""),
    ("unknown endpoint", "GET", "/nothing-here", None, 404, ""),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("input")
    model = save_tiny_model(root / "model")
    settings = tiny_settings(root / "data", model, max_batch=MAX_BATCH,
                             max_body_bytes=MAX_BODY)
    with live_service(settings) as live:
        yield live


def snapshot(live: LiveServer) -> tuple[Any, ...]:
    store = live.services.store
    jobs = [(j.id, j.state) for j in store.list_jobs(limit=1000)]
    versions = [(v.id, v.state) for v in store.list_versions()]
    queue = live.services.queue_length()
    deltas = sorted(p.name for p in Path(store.deltas_dir).iterdir())
    return jobs, versions, store.active_version(), queue, deltas


def test_table_has_enough_cases() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize(("name", "method", "path", "body", "status", "field"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_request(server: LiveServer, name: str, method: str, path: str, body: Any,
                     status: int, field: str) -> None:
    before = snapshot(server)
    with server.client() as client:
        if isinstance(body, bytes):
            response = client.request(method, path, content=body,
                                      headers={"content-type": "application/json"})
        elif body is None:
            response = client.request(method, path)
        else:
            response = client.request(method, path, json=body)
    assert response.status_code == status, (name, response.status_code, response.text)
    payload = response.json()
    assert isinstance(payload["detail"], str) and payload["detail"], payload
    if field:
        named = [e["field"] for e in payload.get("errors", [])]
        assert field in named or payload["detail"].startswith(field), (name, payload)
    assert snapshot(server) == before, f"{name} changed the store"


def test_good_request_is_accepted_after_all_that(server: LiveServer) -> None:
    """The table's requests were refused for their flaw, not because the service was down."""
    with server.client() as client:
        response = client.post("/edits", json=edits(GOOD_FACT, idempotency_key="good-1"))
        assert response.status_code == 202, response.text
        again = client.post("/edits", json=edits(GOOD_FACT, idempotency_key="good-1"))
        assert again.json() == {**response.json(), "created": False}
        other = client.post("/edits", json=edits(fact(target_new="Dutch"),
                                                 idempotency_key="good-1"))
        assert other.status_code == 409 and "idempotency_key" in other.text
        assert client.post("/score", json={"prompt": "Hi", "candidates": ["x"]}).status_code \
            == 200
