"""Soak: SIGKILL the editor worker many times mid-job while jobs are queued.

The long variant of ``test_faults.py::test_worker_and_api_sigkilled``, behind the opt-in
``soak`` marker (deselected unless ``-m`` names it):

    .venv/bin/python -m pytest -m soak tests/e2e/test_soak.py -s      # 10 kills x 10 jobs
    MODELEDIT_SOAK_KILLS=20 MODELEDIT_SOAK_JOBS=15 MODELEDIT_FAULT_SEED=7 \
        .venv/bin/python -m pytest -m soak tests/e2e/test_soak.py -s

On the tiny random model, with real processes and the test Redis (a unique key prefix, never
flushed). Each kill lands while the worker is paused at a stage of a job
(``app/worker/testing_hooks.py``); the seed picks the stage and the job. Afterwards every
job must be committed exactly once, in submission order, with no partial version, no temp or
orphan file, and the weights the API serves equal to a from-scratch replay of the committed
deltas.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.faults import (
    FAST_LOCK,
    WorkerKiller,
    check_committed_in_order,
    delta_dir_problems,
    replay_digest,
    submit,
)
from tests.e2e.harness import Service, wait_for, wait_ready

pytestmark = pytest.mark.soak


def test_soak_worker_kills(tiny_service: Service, tiny_model_dir: Path) -> None:
    kills = int(os.environ.get("MODELEDIT_SOAK_KILLS", "10"))
    jobs = int(os.environ.get("MODELEDIT_SOAK_JOBS", "10"))
    seed = int(os.environ.get("MODELEDIT_FAULT_SEED", time.time_ns() % 100_000))
    service = tiny_service
    service.extra_env.update(FAST_LOCK)
    killer = WorkerKiller(service, kills, seed)
    worker = killer.start()
    api = service.start("api")
    wait_ready(api, timeout=300)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        job_ids = [submit(client, i) for i in range(jobs)]
        worker, report = killer.run(worker, job_ids)
        context = f"seed={seed} kills={report.kills}"
        print(f"{len(report.kills)} kills, {jobs} jobs, {context}; restarts {report.restart_s}s; "
              f"drain after the last kill {report.drain_s}s")
        assert report.kills, context
        versions = check_committed_in_order(service.data_dir, job_ids)
        assert delta_dir_problems(service.data_dir) == [], context
        tip = versions[-1]
        wait_for(lambda: client.get("/ready").json()["version"] == tip, timeout=30,
                 what=f"the API to follow {tip}")
        served = client.get("/ready").json()["weights_sha256"]
        assert served == replay_digest(tiny_model_dir, service.data_dir, tip), context
