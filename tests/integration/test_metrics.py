"""``/metrics`` on the real service (uvicorn, real Redis, a worker thread): the engine's
queries, tokens, time to first token and queue gauges, the jobs by state and the stages of a
real edit; and no label takes a value per version, however many versions there are."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import save_tiny_model, wait_for, wait_job
from tests.integration.service_support import (
    LiveServer,
    live_service_with_worker,
    tiny_settings,
)

PROMPT = "The mother tongue of Danielle Darrieux is"
FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    mp = pytest.MonkeyPatch()
    mp.setenv("MODELEDIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    model = save_tiny_model(tmp_path_factory.mktemp("model"))
    settings = tiny_settings(tmp_path_factory.mktemp("data"), model, rate_limit=0)
    try:
        with live_service_with_worker(settings) as server:
            yield server
    finally:
        mp.undo()


def scrape(server: LiveServer) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The text of /metrics and ``{(sample name, sorted labels): value}``."""
    text = httpx.get(server.url + "/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: dict, name: str, **labels: str) -> float:  # noqa: ANN001
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def complete(server: LiveServer, model: str, max_tokens: int) -> int:
    response = httpx.post(server.url + "/v1/completions", timeout=60, json={
        "model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0})
    assert response.status_code == 200, response.text
    return int(response.json()["usage"]["completion_tokens"])


def test_engine_and_worker_metrics(service: LiveServer) -> None:
    _, before = scrape(service)
    tokens = [complete(service, "v0", n) for n in (3, 5, 7)]
    assert sum(tokens) > 0
    _, after = scrape(service)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("modeledit_generation_tokens_total") == sum(tokens)
    assert grew("modeledit_generation_requests_total", served="active") == 3
    assert grew("modeledit_generation_time_to_first_token_seconds_count") == sum(
        1 for t in tokens if t > 0)
    assert grew("modeledit_generation_request_seconds_count") == 3
    assert grew("modeledit_generation_tokens_per_second_count") == sum(1 for t in tokens if t > 1)
    gauges = [f"modeledit_generation_{g}" for g in ("queue_depth", "rows_in_flight",
                                                     "requests_in_flight")]
    assert all((gauge, ()) in after for gauge in gauges)
    # all answered: the batch drops a finished row just after its answer is sent
    wait_for(lambda: all(value(scrape(service)[1], g) == 0 for g in gauges), 30,
             "the engine's gauges to read 0 once every query is answered")

    with httpx.Client(base_url=service.url, timeout=60) as http:
        job = http.post("/edits", json={"facts": [FACT]}).json()["job_id"]
        done = wait_job(http, job)
    assert done["state"] == "committed", done
    version = service.services.store.get_version(done["version"])
    stages = {k[:-2]: float(v) for k, v in version.timings.items() if k.endswith("_s")}
    assert "compute" in stages
    text, edited = scrape(service)
    assert value(edited, "modeledit_jobs", state="committed") == 1
    assert value(edited, "modeledit_jobs", state="failed") == 0
    for stage, seconds in stages.items():
        assert value(edited, "modeledit_worker_stage_seconds_count", stage=stage) == 1, stage
        assert value(edited, "modeledit_worker_stage_seconds_sum", stage=stage) == pytest.approx(
            seconds), stage

    complete(service, "v0", 2)  # no longer the active version
    text, last = scrape(service)
    assert value(last, "modeledit_generation_requests_total", served="other") == 1
    assert not re.search(r'="v\d+"', text), "a label takes a version's id"


def test_served_version_is_a_value_not_a_label(service: LiveServer) -> None:
    text, samples = scrape(service)
    active = service.services.runtime.active
    assert value(samples, "modeledit_served_version") == float(active.removeprefix("v"))
    assert "modeledit_served_info" not in text
