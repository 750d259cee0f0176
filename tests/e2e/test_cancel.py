"""Stopping jobs, with real processes, real HTTP and real Redis: cancelling a queued job and a
running one (nothing committed), the job time limit, and a SIGTERM mid-job that does not count
as a failed attempt while a crash (SIGKILL) does. Every fault is placed on a state the worker
reported (its pause points), never on a timer."""

from __future__ import annotations

import signal
import time

import httpx

from app.store import VersionStore
from app.worker.testing_hooks import COMMIT, RUNNING
from tests.e2e.faults import submit
from tests.e2e.harness import Proc, Service, wait_for, wait_job, wait_ready
from tests.e2e.pause import PausePoints


def job(client: httpx.Client, job_id: str) -> dict:
    response = client.get(f"/edits/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def versions(client: httpx.Client) -> list[str]:
    return [v["id"] for v in client.get("/versions").json()["versions"]]


def stored_attempts(service: Service, job_id: str) -> tuple[str, int]:
    with VersionStore(service.data_dir, clean=False) as store:
        found = store.get_job(job_id)
        return str(found.state), found.attempts


def test_cancel_a_queued_job(tiny_service: Service) -> None:
    """No worker yet: the job stays queued until cancelled, and never runs afterwards."""
    api = tiny_service.start("api")
    wait_ready(api, worker=False)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        queued = submit(client, 0)
        assert job(client, queued)["state"] == "queued"
        response = client.post(f"/edits/{queued}/cancel")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["state"] == "cancelled" and body["cancel_requested_by"], body
        assert client.post(f"/edits/{queued}/cancel").json()["state"] == "cancelled"
        assert client.get("/edits", params={"state": "cancelled"}).json()[0]["job_id"] == queued
        tiny_service.start("worker")
        wait_ready(api)
        later = wait_job(client, submit(client, 1))
        assert later["state"] == "committed", later
        again = job(client, queued)
        assert (again["state"], again["attempts"], again["version"]) == ("cancelled", 0, None)
        assert versions(client) == ["v0", later["version"]]
        refused = client.post(f"/edits/{later['job_id']}/cancel")
        assert refused.status_code == 409 and "committed" in refused.json()["detail"]
        assert client.post("/edits/nosuchjob/cancel").status_code == 404


def test_cancel_a_running_job_commits_nothing(tiny_service: Service) -> None:
    """Cancelled while the worker holds it at `running`: released, it stops at the first
    step of its edit and never reaches the commit (its pause there is never reached)."""
    pauses = PausePoints.create(tiny_service.root, RUNNING, COMMIT)
    worker = tiny_service.start("worker", **pauses.env())
    api = tiny_service.start("api")
    wait_ready(api)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        running = submit(client, 0)
        assert pauses.wait(RUNNING, 1, worker)["job"] == running
        response = client.post(f"/edits/{running}/cancel")
        assert response.status_code == 202, response.text
        assert response.json()["state"] == "running" and response.json()["cancel_requested_by"]
        pauses.release(RUNNING, 1)
        done = wait_job(client, running)
        assert done["state"] == "cancelled" and "nothing was committed" in done["error"], done
        assert pauses.reached(COMMIT, 1) is None
        assert versions(client) == ["v0"] and client.get("/versions").json()["active"] == "v0"
        pauses.resume()  # the worker goes on: the next job commits
        assert wait_job(client, submit(client, 1))["state"] == "committed"
        assert worker.alive()


def test_job_time_limit(tiny_service: Service) -> None:
    """Held at `running` until its time limit has passed (a condition the pause guarantees,
    not a guessed delay), the job fails at its first step, naming the limit."""
    pauses = PausePoints.create(tiny_service.root, RUNNING)
    worker = tiny_service.start("worker", MODELEDIT_JOB_TIME_LIMIT_S="1", **pauses.env())
    api = tiny_service.start("api")
    wait_ready(api)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        slow = submit(client, 0)
        pauses.wait(RUNNING, 1, worker)
        reached = time.monotonic()
        wait_for(lambda: time.monotonic() - reached > 1.0, 10, "the time limit to pass")
        pauses.release(RUNNING, 1)
        done = wait_job(client, slow)
        assert done["state"] == "failed" and "MODELEDIT_JOB_TIME_LIMIT_S" in done["error"], done
        assert versions(client) == ["v0"]


def _start_paused(service: Service) -> tuple[Proc, PausePoints]:
    pauses = PausePoints.create(service.root, RUNNING)
    return service.start("worker", **pauses.env()), pauses


def test_sigterm_is_not_an_attempt_a_crash_is(tiny_service: Service) -> None:
    api = tiny_service.start("api")
    wait_ready(api, worker=False)
    with httpx.Client(base_url=api.url, timeout=60) as client:
        job_id = submit(client, 0)
        worker, pauses = _start_paused(tiny_service)
        pauses.wait(RUNNING, 1, worker)
        assert stored_attempts(tiny_service, job_id) == ("running", 1)
        assert worker.stop(signal.SIGTERM) == 0
        assert stored_attempts(tiny_service, job_id) == ("queued", 0)  # given back, not spent

        worker, pauses = _start_paused(tiny_service)
        pauses.wait(RUNNING, 1, worker)
        assert stored_attempts(tiny_service, job_id) == ("running", 1)
        worker.kill()  # SIGKILL: a crash, the attempt stays counted
        assert stored_attempts(tiny_service, job_id) == ("running", 1)

        tiny_service.start("worker")
        done = wait_job(client, job_id)
        assert (done["state"], done["attempts"]) == ("committed", 2), done
