"""Fault scenarios and the invariants checked after them, shared by ``test_faults.py`` and
``test_soak.py`` (which runs the worker-kill scenario longer, opt-in: ``-m soak``).

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
from app.worker.testing_hooks import STAGES
from editing.weights.delta import WeightDelta
from editing.weights.fingerprint import weights_digest
from models.load import load_model
from tests.e2e.harness import Proc, Service, redis_client, wait_for
from tests.e2e.pause import PausePoints

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


SCORE_TOL = 1e-4
"""How far a version's log-prob may move from one request to the next (float32): weights are
compared bit for bit (their digests); answers only to float rounding, since the engine reuses
stored prompt prefixes (``MODELEDIT_PREFIX_TOKENS``) and shares batches."""


def same_scores(now: dict[str, Any], before: dict[str, Any], tol: float = SCORE_TOL) -> bool:
    """The same version and candidates, each log-prob within ``tol`` (:data:`SCORE_TOL`)."""
    def rest(answer: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k != "logprob"} for s in answer["scores"]]

    if now["version"] != before["version"] or rest(now) != rest(before):
        return False
    return all(abs(a["logprob"] - b["logprob"]) <= tol
               for a, b in zip(now["scores"], before["scores"], strict=True))


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


# -- the worker-kill scenario (also driven by test_soak.py) ------------------------------
@dataclass
class KillReport:
    """What happened during a kill run, for assertions and for the soak table."""

    seed: int
    kills: list[dict[str, Any]] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)
    drain_s: float = 0.0


class WorkerKiller:
    """SIGKILLs the worker ``kills`` times, each while it is paused mid-job at a stage
    (``app/worker/testing_hooks.py``), so every kill lands mid-job by construction, never by timing.

    The seed varies the kills: each worker process stops at a stage picked from
    :data:`STAGES` (``running``: the job marked running, its edit not started; ``commit``: the
    delta computed and gated, the version not written) and first lets 0 or 1 jobs through.
    Call :meth:`start` before submitting jobs (so no job runs unpaused), then :meth:`run`.
    """

    def __init__(self, service: Service, kills: int, seed: int) -> None:
        self.service, self.kills = service, kills
        self.rng = random.Random(seed)
        self.report = KillReport(seed)
        self.pauses: PausePoints | None = None

    def start(self) -> Proc:
        """A worker paused at the next kill's stage, or a free one once every kill is done."""
        if len(self.report.kills) < self.kills:
            stage = self.rng.choice(STAGES)
            self.pauses = PausePoints.create(self.service.root, stage)
            return self.service.start("worker", **self.pauses.env())
        self.pauses = None
        return self.service.start("worker")

    def run(self, worker: Proc, job_ids: list[str], step_timeout_s: float = 300
            ) -> tuple[Proc, KillReport]:
        """Kill ``worker`` and its successors, then wait until every job has finished; returns
        the last worker and what happened. ``step_timeout_s`` bounds each wait (a restart, a
        pause, the drain): generous, since it only catches a hang, and a worker that died
        fails at once."""
        rclient = redis_client()
        store = VersionStore(self.service.data_dir, clean=False)

        def finished() -> bool:
            return all(store.get_job(j).finished for j in job_ids)

        try:
            while self.pauses is not None:
                killed = self._kill_at_pause(worker, store, finished, step_timeout_s)
                if not killed:
                    self.pauses.resume()
                    break  # every job finished before the next kill could land
                started = time.monotonic()
                worker = self.start()
                _wait_worker_pid(rclient, self.service.prefix, worker, step_timeout_s)
                self.report.restart_s.append(round(time.monotonic() - started, 2))
            started = time.monotonic()
            for job_id in job_ids:  # each job bounded on its own: a slow machine is no hang

                def done(job_id: str = job_id) -> bool:
                    assert worker.alive(), worker.log()
                    return store.get_job(job_id).finished

                wait_for(done, step_timeout_s, f"job {job_id} to finish after the kills")
            self.report.drain_s = round(time.monotonic() - started, 2)
            return worker, self.report
        finally:
            store.close()
            rclient.close()

    def _kill_at_pause(self, worker: Proc, store: VersionStore, finished: Any,
                       timeout: float) -> bool:
        """Let the seed's number of jobs through the stage, then SIGKILL the worker paused at
        it; False when every job finished first."""
        assert self.pauses is not None
        (stage,) = self.pauses.stages
        let_through = self.rng.randrange(2)
        n = 0
        while True:
            n += 1
            info = self.pauses.wait(stage, n, worker, timeout, unless=finished)
            if info is None:
                return False
            job = store.get_job(info["job"])
            # one more kill of a job that already cost MAX_ATTEMPTS - 1 would fail it as a
            # poison pill: let that one through
            if let_through > 0 or job.attempts >= MAX_ATTEMPTS - 1:
                let_through -= 1
                self.pauses.release(stage, n)
                continue
            os.kill(worker.popen.pid, signal.SIGKILL)
            worker.popen.wait(10)
            job = store.get_job(job.id)
            self.report.kills.append({"kill": len(self.report.kills) + 1, "job": job.id[:8],
                                      "stage": stage, "let_through": n - 1,
                                      "job_state": job.state, "attempts": job.attempts})
            return True


def _wait_worker_pid(client: redis.Redis, prefix: str, worker: Proc, timeout: float) -> None:
    def beating() -> bool:
        assert worker.alive(), worker.log()
        info = worker_info(client, prefix)
        return bool(info and info.get("pid") == worker.popen.pid)

    wait_for(beating, timeout, f"worker {worker.popen.pid} to start beating")
