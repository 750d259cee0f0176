"""The editor lock: one worker edits at a time; a second one waits, never races."""

from __future__ import annotations

import contextlib
import logging
import threading

import redis
from redis.exceptions import LockError

from app.queue.redis_util import REDIS_DOWN

__all__ = ["EditorLock", "LockLost"]

log = logging.getLogger(__name__)


class LockLost(RuntimeError):
    """The editor lock expired or vanished (Redis flushed/restarted): stop before committing."""


class EditorLock:
    """A Redis lock so only one worker edits at a time; a second worker waits, never races.

    A background thread renews the TTL every ``ttl_s / 3`` seconds, so a long edit keeps the
    lock while a crashed worker's lock expires after ``ttl_s``. If renewal finds the lock gone
    :attr:`lost` becomes true: call :meth:`check` before committing. (A lost lock cannot cause
    a double commit anyway: commits are idempotent by job id and serialized by SQLite.)
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: float = 30) -> None:
        self.client = client
        self.name = f"{prefix}:editor-lock"
        self.ttl_s = ttl_s
        self._lock = client.lock(self.name, timeout=ttl_s, sleep=0.05, thread_local=False)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock (forever when ``timeout`` is None); ``False`` on timeout."""
        self._stop_renewal()
        got = self._lock.acquire(blocking=True, blocking_timeout=timeout)
        if got:
            self._lost.clear()
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew, name="editor-lock", daemon=True)
            self._thread.start()
        return bool(got)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._lock.reacquire()
            except LockError:
                log.error("editor lock %s was lost; the worker must stop editing", self.name)
                self._lost.set()
                return
            except REDIS_DOWN as exc:
                log.warning("cannot renew editor lock (%s); retrying", exc)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def held(self) -> bool:
        """Whether this object still owns the lock (asks Redis)."""
        try:
            return bool(self._lock.owned())
        except REDIS_DOWN:
            return False

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lock is still ours."""
        if self.lost or not self.held:
            self._lost.set()
            raise LockLost(f"the editor lock {self.name} is no longer held by this worker")

    def _stop_renewal(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def release(self) -> None:
        self._stop_renewal()
        with contextlib.suppress(LockError, *REDIS_DOWN):
            self._lock.release()

    def __enter__(self) -> EditorLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
