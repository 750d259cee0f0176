"""Run the real app under uvicorn in a thread of the test process (real HTTP, real Redis).

Faster than subprocesses for tests that need many requests but no separate worker process;
the end-to-end tests in ``tests/e2e`` run everything as subprocesses.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from app.main import create_app
from app.services import Services, build_services, build_worker, connect_redis, load_parts
from app.settings import Settings
from tests.e2e.harness import (
    REDIS_URL,
    TINY_HPARAMS,
    delete_prefix,
    free_port,
    redis_client,
    unique_prefix,
    wait_for,
)


def tiny_settings(data_dir: Path, model_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "model": str(model_dir),
        "redis_url": REDIS_URL,
        "redis_prefix": unique_prefix(),
        "hparams": TINY_HPARAMS,
        "follow_poll_s": 0.5,
        "heartbeat_s": 0.5,
        "worker_block_ms": 100,
    }
    values.update(overrides)
    return Settings(**values)


class LiveServer:
    """An app served on 127.0.0.1:<free port> from a thread."""

    def __init__(self, services: Services):
        self.services = services
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(services=services), host="127.0.0.1",
                                port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()

        def started() -> bool:
            assert self.thread.is_alive(), "uvicorn stopped while starting"
            return self.server.started

        wait_for(started, 30, "uvicorn to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)


@contextlib.contextmanager
def live_service(settings: Settings) -> Iterator[LiveServer]:
    """Build the services for ``settings``, serve them, and clean everything up."""
    client = redis_client()
    services = build_services(settings)
    server = LiveServer(services).start()
    try:
        yield server
    finally:
        server.stop()
        services.close()
        delete_prefix(client, settings.redis_prefix)
        client.close()


class RunningWorker:
    """The editor worker in a thread of the test process (``start()`` runs its loop)."""

    def __init__(self, settings: Settings):
        self.handle, self.client = connect_redis(settings)
        self.worker = build_worker(settings, load_parts(settings), self.client)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def start(self) -> RunningWorker:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.worker.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        self.worker.parts.store.close()
        self.client.close()


@contextlib.contextmanager
def live_service_with_worker(settings: Settings) -> Iterator[LiveServer]:
    """:func:`live_service` with the editor worker running beside it on the same settings
    (stopped before the service, which removes the worker's stream)."""
    with live_service(settings) as server:
        worker = RunningWorker(settings).start()
        try:
            yield server
        finally:
            worker.stop()
