"""Run the real service (``python -m app api|worker|serve``) as subprocesses for tests.

The launch itself is :mod:`bench.service` (the benchmarks that start a service share it);
this adds what only tests want: a missing Redis fails the test, and waiting for a job.
Nothing is mocked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from bench import service as launch
from bench.service import (  # noqa: F401  (the names the tests import from here)
    REDIS_URL,
    REPO,
    TINY_HPARAMS,
    Proc,
    Service,
    delete_prefix,
    free_port,
    save_tiny_model,
    unique_prefix,
    wait_for,
    wait_ready,
)


def redis_client() -> redis.Redis:
    """The test Redis; a missing one fails the test (``make test`` starts one), never skips."""
    try:
        return launch.redis_client()
    except launch.NoRedis as exc:
        pytest.fail(str(exc))


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    """Poll ``GET /edits/{job_id}`` until the job is committed, failed or cancelled."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/edits/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["state"] in ("committed", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {body}")


@contextmanager
def running(service: Service) -> Iterator[Service]:
    """:func:`bench.service.running`, failing the test (not erroring) without a Redis."""
    redis_client().close()
    with launch.running(service):
        yield service
