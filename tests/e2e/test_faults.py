"""Faults the service must survive, with real processes, real Redis and real files.

* the worker SIGKILLed mid-job while jobs are queued, again and again (paused at a stage the
  seed picks, ``MODELEDIT_FAULT_SEED``, so no kill depends on timing), then the API process
  SIGKILLed too: every job commits exactly once, in submission order, nothing partial or
  temporary is left, and the weights served equal a from-scratch replay of the deltas;
* Redis losing all its data (FLUSHALL of a private server) with both processes running and
  the worker paused in a job: no accepted job is lost, and an idempotency key still names
  the same job;
* the delta directory becoming unwritable while a job commits: the job fails with a reason,
  the active version and its weights are unchanged, queries keep answering, and the next job
  commits once the directory is back.

The store-level versions of these faults live in ``tests/integration/test_store.py`` and
``test_queue.py``; these tests prove the processes put together keep the same promises.
The scenario and the checks live in ``tests/e2e/faults.py``; ``test_soak.py`` runs the
worker-kill scenario longer (10 kills x 10 jobs; opt-in, ``-m soak``).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from app.queue import EditQueue
from app.queue.redis_server import ensure_redis
from app.worker.testing_hooks import RUNNING
from tests.e2e.faults import (
    FAST_LOCK,
    WorkerKiller,
    check_committed_in_order,
    delta_dir_problems,
    fact,
    ready,
    replay_digest,
    same_scores,
    score,
    submit,
)
from tests.e2e.harness import Service, redis_client, wait_for, wait_job, wait_ready
from tests.e2e.pause import PausePoints


def test_worker_and_api_sigkilled(tiny_service: Service, tiny_model_dir: Path) -> None:
    """Worker SIGKILLed 3 times mid-job (paused at a stage the seed picks) while 6 jobs are
    queued, then the API process SIGKILLed after a rollback; see the module docstring for
    what must hold."""
    service = tiny_service
    service.extra_env.update(FAST_LOCK)
    seed = int(os.environ.get("MODELEDIT_FAULT_SEED", time.time_ns() % 100_000))
    killer = WorkerKiller(service, kills=3, seed=seed)
    worker = killer.start()
    api = service.start("api")
    wait_ready(api)
    client = httpx.Client(base_url=api.url, timeout=60)
    jobs = [submit(client, i) for i in range(6)]
    worker, report = killer.run(worker, jobs)
    context = f"seed={seed} kills={report.kills}"
    print(f"worker kills: {context}; restarts {report.restart_s}s; drain {report.drain_s}s")
    assert len(report.kills) == 3, context  # 6 jobs, at most one let through per kill
    assert all(k["job_state"] == "running" for k in report.kills), (
        f"every kill must land mid-job; {context}")

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
    now_scores = score(client)
    assert same_scores(now_scores, before_scores), (now_scores, before_scores)
    client.close()
    for proc in (api, worker):
        proc.stop()


def test_redis_flushed_with_services_running(tiny_service: Service, tmp_path: Path) -> None:
    """A private Redis (never the shared one) loses everything while jobs are queued and one
    is running (the worker paused in it): the jobs are re-enqueued from SQLite and commit
    once each, in order."""
    private = ensure_redis(None, tmp_path / "private-redis")
    assert private.owned and private.url != os.environ.get("REDIS_URL")
    rclient = private.client()
    try:
        service = tiny_service
        service.extra_env.update({**FAST_LOCK, "REDIS_URL": private.url})
        pauses = PausePoints.create(tmp_path, RUNNING)
        worker = service.start("worker", **pauses.env())
        api = service.start("api")
        wait_ready(api)
        client = httpx.Client(base_url=api.url, timeout=60)
        body = {"facts": [fact(0)], "idempotency_key": "flush-0"}
        first = client.post("/edits", json=body).json()["job_id"]
        jobs = [first] + [submit(client, i, key=f"flush-{i}") for i in range(1, 5)]
        assert pauses.wait(RUNNING, 1, worker) == {"stage": RUNNING, "n": 1, "job": first,
                                                   "pid": worker.popen.pid}
        states = [client.get(f"/edits/{j}").json()["state"] for j in jobs]
        assert states == ["running"] + ["queued"] * 4, states
        rclient.flushall()
        assert rclient.dbsize() == 0
        pauses.resume()

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
    now_scores = score(client)
    assert same_scores(now_scores, before_scores), (now_scores, before_scores)
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
