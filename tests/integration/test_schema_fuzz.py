"""schemathesis against the app's own OpenAPI schema: no 5xx, no response outside the schema.

Why: the hand-written table in ``test_service_input.py`` covers the bad inputs we thought of;
generated requests cover the ones we did not (odd unicode, huge integers, wrong types in
every field, path parameters full of punctuation). The run is bounded (``EXAMPLES`` per
operation and mode, a few hundred requests in all) so it fits in CI.

The server is the real app under uvicorn on the tiny model, with real Redis (the shared
server, a unique key prefix) and no worker: ``POST /edits`` only persists and enqueues. Rate
limits are off and the queue limit is high so generated requests reach the handlers instead
of stopping at a 429.

schemathesis' own pytest plugin (``from_fixture`` + ``parametrize``) does not work with the
pytest in this venv (``'Function' object has no attribute '_nodeid'``), so each operation's
hypothesis strategy is driven directly: same generation, same checks, our own parametrize.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.harness import save_tiny_model
from tests.integration.service_support import LiveServer, live_service, tiny_settings

EXAMPLES = int(os.environ.get("MODELEDIT_FUZZ_EXAMPLES", "12"))
"""Hypothesis examples per operation and generation mode (21 operations x 2 modes)."""

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
"""What we assert. ``positive_data_acceptance`` is left out on purpose: the schema cannot
express every rule of a fact (no control characters, not blank, the editing core's own
checks), so some schema-valid requests get a documented 422."""

OPERATIONS = [
    ("GET", "/edits"), ("POST", "/edits"), ("GET", "/edits/{job_id}"),
    ("GET", "/versions"), ("GET", "/versions/{version}"),
    ("POST", "/versions/{version}/rollback"), ("POST", "/versions/{version}/revert"),
    ("POST", "/versions/{version}/evaluate"), ("GET", "/versions/{version}/export"),
    ("POST", "/score"), ("POST", "/generate"), ("POST", "/next-tokens"),
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"),
    ("GET", "/facts"), ("GET", "/whoami"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{model_id}"), ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
]
"""Listed (not discovered) so that collection needs no server, and so that an endpoint that
disappears from the schema fails the test instead of silently being skipped."""

NO_INPUT = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/versions"),
            ("GET", "/whoami"), ("GET", "/v1/models"), ("GET", "/v1/models/{model_id}")}
"""Operations without any input that can be invalid (with no token configured, not even
Authorization; a model id is any string, an unknown one a documented 404): there is no
invalid request to generate for them."""
NOT_READY_OK = {("GET", "/ready")}
"""``/ready`` answers a documented 503 (``ReadyOut``): this server runs no worker."""

MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
SENT: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz")
    model = save_tiny_model(root / "model")
    settings_ = tiny_settings(root / "data", model, rate_limit=0, max_queue=100_000,
                              max_batch=16, max_body_bytes=200_000)
    with live_service(settings_) as live:
        yield live


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> Any:
    """The schema the running app serves: what clients see."""
    raw = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(raw)


def _operation(api_schema: Any, method: str, path: str) -> Any:
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == method and op.path == path:
            return op
    raise AssertionError(f"{method} {path} is not in the OpenAPI schema any more")


# Operations without any input have no invalid variant: they are fuzzed in positive mode only.
CASES = [(method, path, mode) for method, path in OPERATIONS for mode in MODES
         if not (mode is GenerationMode.NEGATIVE and (method, path) in NO_INPUT)]


@pytest.mark.parametrize(("method", "path", "mode"), CASES,
                         ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_generated_requests(api_schema: Any, fuzz_server: LiveServer, method: str, path: str,
                            mode: GenerationMode) -> None:
    """Every generated request, valid or not, gets a documented status and a body that
    matches the documented schema; never a 5xx. Schema-invalid requests are refused."""
    operation = _operation(api_schema, method, path)
    checks = CHECKS
    limit = 500
    if (method, path) in NOT_READY_OK:
        checks = [c for c in CHECKS if c is not not_a_server_error]
        limit = 504
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal sent
        response = case.call(base_url=fuzz_server.url, timeout=60)
        sent += 1
        assert response.status_code < limit, (case.method, case.path, response.text[:500])
        # 413 is how a body over the byte limit is refused (documented for every route), but
        # schemathesis does not count it among the rejections of invalid data.
        excluded = [negative_data_rejection] if response.status_code == 413 else []
        case.validate_response(response, checks=checks, excluded_checks=excluded)

    run()
    SENT[f"{method} {path} {mode.value}"] = sent
    # A strategy that generated nothing would pass vacuously.
    assert sent >= 1, f"no request was generated for {method} {path} ({mode.value})"


def test_store_survived_the_fuzzing(fuzz_server: LiveServer) -> None:
    """Runs after the generated requests: the service still answers and its store is sane
    (every accepted job is queued in SQLite, nothing was committed without a worker)."""
    with fuzz_server.client() as client:
        ready = client.get("/ready").json()
        assert ready["version"] == "v0" and ready["redis"] is True
        listing = client.get("/versions").json()
    store = fuzz_server.services.store
    assert [v["id"] for v in listing["versions"]] == [v.id for v in store.list_versions()]
    jobs = store.list_jobs(limit=100_000)
    assert all(j.state == "queued" for j in jobs), {j.state for j in jobs}
    total = sum(SENT.values())
    print(f"schemathesis: {total} generated requests over {len(SENT)} operation/mode pairs")
    assert total >= 10 * len(SENT), SENT  # a few hundred, not a vacuous handful
