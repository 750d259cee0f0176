"""Faults the service must survive, with real processes, real Redis and real files.

* the worker SIGKILLed at random moments while jobs are queued, again and again, then the API
  process SIGKILLed too: every job commits exactly once, in submission order, nothing partial
  or temporary is left, and the weights served equal a from-scratch replay of the deltas;
* Redis losing all its data (FLUSHALL of a private server) with both processes running: no
  accepted job is lost, and an idempotency key still names the same job;
* the delta directory becoming unwritable while a job commits: the job fails with a reason,
  the active version and its weights are unchanged, queries keep answering, and the next job
  commits once the directory is back.

The store-level versions of these faults live in ``tests/integration/test_store.py`` and
``test_queue.py``; these tests prove the processes put together keep the same promises.
``bench/soak.py`` runs the worker-kill scenario longer (10 kills x 10 jobs).
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from app.queue import EditQueue, worker_info
from app.redis_server import ensure_redis
from app.runtime import digest_mlp_out
from app.store import VersionStore
from app.worker import MAX_ATTEMPTS
from editing.delta import WeightDelta
from models.load import load_model
from tests.e2e.harness import Proc, Service, redis_client, wait_for, wait_job, wait_ready

FAST_LOCK = {"MODELEDIT_LOCK_TTL_S": "3"}
"""A SIGKILLed worker cannot release the editor lock: its successor waits for the TTL. The
default (30 s) would make each restart here cost half a minute; 3 s keeps the tests short and
still exercises the expiry."""

SUBJECTS = ["Danielle Darrieux", "Toko Yasuda", "Michel Rocard", "Watts Humphrey",
            "Montesquieu", "Apple A5", "Paris", "Berlin", "Tokyo", "Rome", "London", "Google"]
TARGETS = ["English", "French", "piano", "guitar", "Italian", "Japan"]


def fact(i: int) -> dict[str, str]:
    """Distinct facts, so every job has its own payload and delta."""
    return {"subject": SUBJECTS[i % len(SUBJECTS)], "prompt": "The native language of {} is",
            "target_new": TARGETS[i % len(TARGETS)]}


def submit(client: httpx.Client, i: int, key: str | None = None) -> str:
    body: dict[str, Any] = {"facts": [fact(i)]}
    if key is not None:
        body["idempotency_key"] = key
    response = client.post("/edits", json=body)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def score(client: httpx.Client, version: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": "The native language of Toko Yasuda is",
                            "candidates": ["English", "piano"]}
    if version:
        body["version"] = version
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# -- what must hold after any fault ------------------------------------------------------
def replay_digest(model_dir: Path, data_dir: Path, version: str) -> str:
    """The weights of ``version`` rebuilt from nothing: a freshly loaded base model plus each
    delta file of its chain, applied in order, hashed the way the runtime hashes."""
    store = VersionStore(data_dir, clean=False)  # clean=False: observe, do not tidy up
    try:
        chain = store.chain(version)
        lm = load_model(str(model_dir), "cpu", None)
        for link in chain[1:]:
            WeightDelta.load(store.delta_file(link)).apply(lm.model)
        return digest_mlp_out(lm.model)
    finally:
        store.close()


def delta_dir_problems(data_dir: Path) -> list[str]:
    """Temp files, and delta files no version references (a commit that half happened)."""
    store = VersionStore(data_dir, clean=False)
    try:
        referenced = {Path(v.delta_path).name for v in store.list_versions() if v.delta_path}
    finally:
        store.close()
    problems = []
    for path in sorted((data_dir / "deltas").iterdir()):
        if path.name.endswith(".tmp"):
            problems.append(f"temp file {path.name}")
        elif path.suffix == ".safetensors" and path.name not in referenced:
            problems.append(f"orphan delta {path.name}")
    return problems


def check_committed_in_order(data_dir: Path, job_ids: list[str]) -> list[str]:
    """Every job committed exactly once and the versions chain in submission order; returns
    the version ids. Also verifies every delta file against its recorded sha256."""
    store = VersionStore(data_dir, clean=False)
    try:
        jobs = [store.get_job(j) for j in job_ids]
        assert [j.state for j in jobs] == ["committed"] * len(jobs), [
            (j.id[:8], j.state, j.error) for j in jobs]
        versions = [j.version for j in jobs]
        assert len(set(versions)) == len(versions), versions
        parents = [store.get_version(v).parent for v in versions]
        assert parents == ["v0", *versions[:-1]], list(zip(versions, parents, strict=True))
        every = store.list_versions()
        # no version without a job of ours: nothing committed twice, nothing half-made
        assert [v.id for v in every] == ["v0", *versions], [v.id for v in every]
        for version in every[1:]:
            assert version.state == "committed", version
            store.read_delta(version)  # raises CorruptDelta on a partial or missing file
        return [v for v in versions if v is not None]
    finally:
        store.close()


def ready(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    return response.json()


# -- the worker-kill scenario (also driven by bench/soak.py) ------------------------------
@dataclass
class KillReport:
    """What happened during a kill run, for assertions and for the soak table."""

    seed: int
    kills: list[dict[str, Any]] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)
    drain_s: float = 0.0


def _wait_worker_pid(client: redis.Redis, prefix: str, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = worker_info(client, prefix)
        if info and info.get("pid") == pid:
            return
        time.sleep(0.02)
    raise AssertionError(f"worker {pid} did not start beating within {timeout}s")


def _running_job(client: redis.Redis, prefix: str, pid: int) -> str | None:
    info = worker_info(client, prefix)
    if info and info.get("pid") == pid and info.get("state") == "running":
        return info.get("job")
    return None


def kill_worker_repeatedly(
    service: Service,
    worker: Proc,
    job_ids: list[str],
    kills: int,
    seed: int,
    max_delay_s: float = 1.0,
    timeout_s: float = 300,
) -> tuple[Proc, KillReport]:
    """SIGKILL the worker ``kills`` times, each at a random moment after it started a job
    (the first kill 50 ms in, so at least one surely lands mid-edit), restart it each time,
    then wait until every job has finished. Returns the last worker and what happened."""
    rng = random.Random(seed)
    report = KillReport(seed)
    rclient = redis_client()
    store = VersionStore(service.data_dir, clean=False)
    deadline = time.monotonic() + timeout_s
    try:
        _wait_worker_pid(rclient, service.prefix, worker.popen.pid, 120)
        for n in range(kills):
            job_id = None
            while job_id is None and time.monotonic() < deadline:
                if all(store.get_job(j).finished for j in job_ids):
                    break
                job_id = _running_job(rclient, service.prefix, worker.popen.pid)
                if job_id is not None and store.get_job(job_id).attempts >= MAX_ATTEMPTS - 1:
                    job_id = None  # one more kill would give the job up as a poison pill
                time.sleep(0.005)
            if job_id is None:
                break  # everything finished before we could kill again
            delay = 0.05 if n == 0 else rng.uniform(0.0, max_delay_s)
            time.sleep(delay)
            os.kill(worker.popen.pid, signal.SIGKILL)
            worker.popen.wait(10)
            job = store.get_job(job_id)
            report.kills.append({"kill": n + 1, "job": job_id[:8], "after_s": round(delay, 3),
                                 "job_state": job.state, "attempts": job.attempts})
            started = time.monotonic()
            worker = service.start("worker")
            _wait_worker_pid(rclient, service.prefix, worker.popen.pid, 120)
            report.restart_s.append(round(time.monotonic() - started, 2))
        started = time.monotonic()
        while not all(store.get_job(j).finished for j in job_ids):
            assert worker.alive(), worker.log()
            assert time.monotonic() < deadline, "jobs did not finish after the kills"
            time.sleep(0.05)
        report.drain_s = round(time.monotonic() - started, 2)
        return worker, report
    finally:
        store.close()
        rclient.close()


def test_worker_and_api_sigkilled(tiny_service: Service, tiny_model_dir: Path) -> None:
    """Worker SIGKILLed 3 times at random moments while 6 jobs are queued, then the API
    process SIGKILLed after a rollback; see the module docstring for what must hold."""
    service = tiny_service
    service.extra_env.update(FAST_LOCK)
    worker = service.start("worker")
    api = service.start("api")
    wait_ready(api)
    client = httpx.Client(base_url=api.url, timeout=60)
    jobs = [submit(client, i) for i in range(6)]
    seed = int(os.environ.get("MODELEDIT_FAULT_SEED", time.time_ns() % 100_000))
    worker, report = kill_worker_repeatedly(service, worker, jobs, kills=3, seed=seed)
    context = f"seed={seed} kills={report.kills}"
    print(f"worker kills: {context}; restarts {report.restart_s}s; drain {report.drain_s}s")
    assert len(report.kills) >= 1, context
    first = report.kills[0]
    assert first["job_state"] == "running", f"the first kill must land mid-edit; {context}"

    versions = check_committed_in_order(service.data_dir, jobs)
    assert delta_dir_problems(service.data_dir) == [], context
    rclient = redis_client()
    queue = EditQueue(rclient, service.prefix)
    wait_for(lambda: queue.length() == 0, what="the stream to drain (every entry acked)")
    rclient.close()
    tip = versions[-1]
    wait_for(lambda: ready(client)["version"] == tip, what=f"the API to follow {tip}")
    served = ready(client)["weights_sha256"]
    recorded = client.get(f"/versions/{tip}").json()["weights_sha256"]
    assert served == recorded == replay_digest(tiny_model_dir, service.data_dir, tip), context

    # -- the API process SIGKILLed (after a rollback, so "active" is not simply the tip) ---
    middle = versions[2]
    assert client.post(f"/versions/{middle}/rollback").status_code == 200
    before_ready = ready(client)
    before_scores = score(client)
    assert before_ready["version"] == before_scores["version"] == middle
    api.popen.send_signal(signal.SIGKILL)
    api.popen.wait(10)
    client.close()
    api = service.start("api")
    after_ready = wait_ready(api)
    client = httpx.Client(base_url=api.url, timeout=60)
    assert after_ready["version"] == middle
    assert after_ready["weights_sha256"] == before_ready["weights_sha256"]
    assert after_ready["weights_sha256"] == replay_digest(tiny_model_dir, service.data_dir,
                                                          middle)
    assert score(client) == before_scores  # bit-identical log-probs, same version tag
    client.close()
    for proc in (api, worker):
        proc.stop()


def test_redis_flushed_with_services_running(tiny_service: Service, tmp_path: Path) -> None:
    """A private Redis (never the shared one) loses everything while jobs are queued and one
    is running: the jobs are re-enqueued from SQLite and commit once each, in order."""
    private = ensure_redis(None, tmp_path / "private-redis")
    assert private.owned and private.url != os.environ.get("REDIS_URL")
    rclient = private.client()
    try:
        service = tiny_service
        service.extra_env.update({**FAST_LOCK, "REDIS_URL": private.url})
        worker = service.start("worker")
        api = service.start("api")
        wait_ready(api)
        client = httpx.Client(base_url=api.url, timeout=60)
        body = {"facts": [fact(0)], "idempotency_key": "flush-0"}
        first = client.post("/edits", json=body).json()["job_id"]
        jobs = [first] + [submit(client, i, key=f"flush-{i}") for i in range(1, 5)]
        unfinished = [j for j in jobs if client.get(f"/edits/{j}").json()["state"]
                      in ("queued", "running")]
        rclient.flushall()
        assert rclient.dbsize() == 0
        assert len(unfinished) >= 3, "the flush must hit queued jobs to prove anything"

        again = client.post("/edits", json=body)
        assert again.status_code == 202, again.text
        assert again.json() == {"job_id": first, "state": again.json()["state"],
                                "created": False}
        for job_id in jobs:
            assert wait_job(client, job_id)["state"] == "committed"
        versions = check_committed_in_order(service.data_dir, jobs)
        assert delta_dir_problems(service.data_dir) == []
        queue = EditQueue(rclient, service.prefix)
        wait_for(lambda: queue.length() == 0, what="the rebuilt stream to drain")
        assert "re-enqueued" in worker.log(20_000), worker.log()  # the outbox recovery ran
        # the key still names the same (now committed) job, and it was not run twice
        final = client.post("/edits", json=body).json()
        assert final["job_id"] == first and final["created"] is False
        assert final["state"] == "committed"
        wait_for(lambda: ready(client)["version"] == versions[-1], what="API to follow")
        client.close()
        for proc in (api, worker):
            proc.stop()
    finally:
        rclient.close()
        private.stop()


def test_unwritable_delta_dir_while_committing(tiny_service: Service) -> None:
    """``<data>/deltas`` replaced by a file (works as root, unlike chmod): the edit fails with
    a reason naming the problem, nothing changes, queries answer; restored, edits work."""
    service = tiny_service
    worker = service.start("worker")
    api = service.start("api")
    wait_ready(api)
    client = httpx.Client(base_url=api.url, timeout=60)
    v1 = wait_job(client, submit(client, 0))["version"]
    wait_for(lambda: ready(client)["version"] == v1, what="API to follow v1")
    before = ready(client)
    before_scores = score(client)

    deltas = service.data_dir / "deltas"
    aside = service.data_dir / "deltas.aside"
    deltas.rename(aside)
    deltas.write_text("not a directory")
    try:
        failed = wait_job(client, submit(client, 1))
    finally:
        deltas.unlink()
        aside.rename(deltas)
    assert failed["state"] == "failed" and failed["version"] is None, failed
    assert "could not be stored" in failed["error"] and "deltas" in failed["error"], failed
    assert "writable" in failed["error"], failed  # it says what to do
    listing = client.get("/versions").json()
    assert listing["active"] == v1 and [v["id"] for v in listing["versions"]] == ["v0", v1]
    assert ready(client)["weights_sha256"] == before["weights_sha256"]
    assert score(client) == before_scores
    generated = client.post("/generate", json={"prompt": "The native language of", "max_new_tokens": 3})
    assert generated.status_code == 200 and generated.json()["version"] == v1
    assert delta_dir_problems(service.data_dir) == []

    # the worker survived the failure: the next job commits on top of the unchanged active
    job = wait_job(client, submit(client, 2))
    assert job["state"] == "committed", job
    assert client.get(f"/versions/{job['version']}").json()["parent"] == v1
    client.close()
    for proc in (api, worker):
        proc.stop()
