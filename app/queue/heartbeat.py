"""The worker heartbeat: a key with a TTL that ``/ready`` reads to report the worker alive."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import redis

from app.queue.redis_util import REDIS_DOWN, decode

__all__ = ["WorkerHeartbeat", "is_alive", "worker_info"]


def _heartbeat_key(prefix: str) -> str:
    return f"{prefix}:worker:heartbeat"


class WorkerHeartbeat:
    """A key with a TTL, refreshed by a thread: ``/ready`` reports the worker alive while it
    exists. ``update(**info)`` adds what the worker does (active version, current job)."""

    def __init__(
        self, client: redis.Redis, prefix: str, ttl_s: float = 10, interval_s: float = 2
    ) -> None:
        self.client = client
        self.key = _heartbeat_key(prefix)
        self.ttl_ms = int(ttl_s * 1000)
        self.interval_s = interval_s
        self.info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write the key once; ``False`` if Redis is unreachable."""
        value = json.dumps({**self.info, "time": time.time()}, default=str)
        try:
            self.client.set(self.key, value, px=self.ttl_ms)
            return True
        except REDIS_DOWN:
            return False

    def update(self, **info: Any) -> None:
        self.info.update(info)
        self.beat()

    def start(self) -> WorkerHeartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        """Stop beating and remove the key: a clean shutdown is reported at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(*REDIS_DOWN):
            self.client.delete(self.key)

    def __enter__(self) -> WorkerHeartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_alive(client: redis.Redis, prefix: str) -> bool:
    """Whether a worker has beaten within its TTL (``False`` when Redis is unreachable)."""
    try:
        return bool(client.exists(_heartbeat_key(prefix)))
    except REDIS_DOWN:
        return False


def worker_info(client: redis.Redis, prefix: str) -> dict[str, Any] | None:
    """What the live worker last reported, or ``None``."""
    try:
        raw = client.get(_heartbeat_key(prefix))
    except REDIS_DOWN:
        return None
    return None if raw is None else json.loads(decode(raw))
