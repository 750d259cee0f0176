"""The worker loop against real Redis and the tiny model: strict order, exactly-once effect,
recovery of jobs Redis lost, clear failures, and a second worker that waits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.queue import EditQueue
from app.settings import Settings
from tests.e2e.harness import delete_prefix, redis_client, save_tiny_model, wait_for
from tests.integration.service_support import RunningWorker, tiny_settings

FACTS = [
    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
     "target_new": "English"},
    {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "piano"},
    {"subject": "Michel Rocard", "prompt": "{} is a native speaker of", "target_new": "Italian"},
]



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("worker-model"))


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "wcache"))
    client = redis_client()
    settings = tiny_settings(tmp_path / "data", model_dir)
    try:
        yield settings
    finally:
        delete_prefix(client, settings.redis_prefix)
        client.close()


def submit(settings: Settings, store, facts: list[dict]) -> str:  # noqa: ANN001
    """What POST /edits does: persist, then enqueue."""
    job, _ = store.create_job({"kind": "edit", "facts": facts, "method": "fe"})
    client = redis_client()
    EditQueue(client, settings.redis_prefix).enqueue(job.id)
    client.close()
    return job.id


def wait_finished(store, job_ids: list[str], timeout: float = 900) -> None:  # noqa: ANN001
    wait_for(lambda: all(store.get_job(j).finished for j in job_ids), timeout,
             f"jobs {job_ids} to finish")


def test_jobs_commit_in_order_exactly_once(settings: Settings) -> None:
    running = RunningWorker(settings)
    store = running.worker.parts.store
    jobs = [submit(settings, store, [fact]) for fact in FACTS]
    bad_job, _ = store.create_job({"kind": "edit", "facts": [
        {"subject": "x", "prompt": "no slot", "target_new": "y"}]})
    bad = bad_job.id
    client = redis_client()
    EditQueue(client, settings.redis_prefix).enqueue(bad)
    running.start()
    wait_finished(store, [*jobs, bad])
    versions = [store.get_job(j).version for j in jobs]
    assert versions == ["v1", "v2", "v3"]
    assert [store.get_version(v).parent for v in versions] == ["v0", "v1", "v2"]
    failed = store.get_job(bad)
    assert failed.state == "failed" and "prompt" in failed.error
    assert store.active_version() == "v3"
    # a repeated delivery of a committed job has no effect
    queue = EditQueue(client, settings.redis_prefix)
    queue.enqueue(jobs[0])
    wait_for(lambda: queue.length() == 0, 30, "the worker to take and ack the repeat")
    assert len(store.list_versions()) == 4
    # the worker serves what it committed, and recorded its digest for other processes
    runtime = running.worker.parts.runtime
    assert runtime.active == "v3"
    assert runtime.weights_digest() == store.get_version("v3").diagnostics["weights_sha256"]
    running.stop()
    client.close()


def test_jobs_redis_lost_are_recovered_and_second_worker_waits(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    first = RunningWorker(settings)
    store = first.worker.parts.store
    jobs = [submit(settings, store, [fact]) for fact in FACTS[:2]]
    client = redis_client()
    delete_prefix(client, settings.redis_prefix)  # Redis lost its data (FLUSHALL)
    assert EditQueue(client, settings.redis_prefix).length() == 0
    first.start()
    wait_finished(store, jobs)
    assert [store.get_job(j).version for j in jobs] == ["v1", "v2"]

    second = RunningWorker(settings)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: second.worker.acquire_lock() and got.set(),
                              daemon=True)
    caplog.set_level(logging.WARNING, logger="app.worker")
    waiter.start()
    # the second worker tried for the lock (a whole 1 s attempt) and was refused
    wait_for(lambda: "another worker holds the editor lock" in caplog.text, 30,
             "the second worker to report it waits")
    assert not got.is_set(), "a second worker must wait for the editor lock"
    first.stop()
    assert got.wait(10), "the second worker gets the lock once the first stops"
    second.worker.lock.release()
    second.worker.parts.store.close()
    second.client.close()
    client.close()


def test_a_fact_too_large_for_memory_fails_with_the_setting_to_change(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker splits a batch to fit; only a fact that cannot fit at all fails the job."""
    monkeypatch.setenv("MODELEDIT_MEMORY_BUDGET", "1KiB")
    running = RunningWorker(settings)
    store = running.worker.parts.store
    job = submit(settings, store, FACTS[:1])
    running.start()
    wait_finished(store, [job])
    failed = store.get_job(job)
    assert failed.state == "failed"
    assert "MODELEDIT_MEMORY_BUDGET" in failed.error and "z optimisation" in failed.error
    assert store.active_version() == "v0"
    running.stop()


def test_a_payload_that_is_no_job_fails_with_the_reason(settings: Settings) -> None:
    running = RunningWorker(settings)
    store = running.worker.parts.store
    client = redis_client()
    queue = EditQueue(client, settings.redis_prefix)
    bogus, _ = store.create_job({"kind": "explode"})
    no_target, _ = store.create_job({"kind": "revert"})
    for job in (bogus, no_target):
        queue.enqueue(job.id)
    running.start()
    wait_finished(store, [bogus.id, no_target.id])
    assert store.get_job(bogus.id).error == "unknown job kind 'explode'"
    assert store.get_job(no_target.id).error == "invalid revert job: version: Field required"
    assert store.list_versions()[-1].id == "v0"
    running.stop()
    client.close()
