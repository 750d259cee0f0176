"""Fault scenarios and the invariants checked after them, shared by ``test_faults.py`` and
``bench/soak.py`` (which runs the worker-kill scenario longer).

After any fault: every accepted job committed exactly once, in submission order; no temporary
or orphan delta file; the served weights equal a from-scratch replay of the version's deltas.
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

from app.queue import worker_info
from app.store import VersionStore
from app.worker.loop import MAX_ATTEMPTS
from editing.delta import WeightDelta
from editing.fingerprint import weights_digest
from models.load import load_model
from tests.e2e.harness import Proc, Service, redis_client

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
        return weights_digest(lm.model)
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
