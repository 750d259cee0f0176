"""The editor worker: a long-lived process that takes jobs strictly in order, one at a time.

Loop: take the editor lock (a second worker waits here, never races), re-enqueue what SQLite
says is unfinished (outbox), then for each stream entry: look the job up (skip it if already
finished: delivery is at-least-once), run it, commit through the store, follow the new active
version, acknowledge, publish. A crash at any point leaves either no version or a committed
one; the pending entry comes back first on restart under the same consumer name.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

import redis

from app.queue import (
    Consumer,
    EditorLock,
    EditQueue,
    LockLost,
    WorkerHeartbeat,
    publish_committed,
    requeue_unfinished,
)
from app.serving.parts import ModelParts
from app.settings import Settings
from app.store import Cancelled, Conflict, NotFound, StoreWriteError
from app.worker.cancel import JobCancelled, JobCheck, JobTimedOut
from app.worker.handlers import JobFailed, JobRunner
from app.worker.testing_hooks import COMMIT, RUNNING, pause_point

log = logging.getLogger(__name__)

CONSUMER_NAME = "editor"
"""Fixed, so a restarted worker re-reads its pending entry first."""
MAX_ATTEMPTS = 5
"""A job that killed the worker this many times is failed (a poison pill)."""
SWEEP_EVERY_S = 5.0
REDIS_RETRY_S = 1.0


class Stopping(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT during a job: abandon it (it re-runs)."""


@dataclass
class Worker:
    """The loop over the parts :func:`app.services.build_worker` wires together."""

    settings: Settings
    parts: ModelParts
    client: redis.Redis
    queue: EditQueue
    lock: EditorLock
    runner: JobRunner

    def __post_init__(self) -> None:
        self.heartbeat = self._new_heartbeat()
        # every commit also passes the test-only pause point (a no-op unless a test asks)
        self.runner.before_commit = self._before_commit
        self.runner.check = self._check_job  # at every progress report of a job
        self.stop = threading.Event()
        self.busy = False
        self.job_check: JobCheck | None = None

    def _new_heartbeat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(self.client, self.settings.redis_prefix,
                               ttl_s=max(5.0, 4 * self.settings.heartbeat_s),
                               interval_s=self.settings.heartbeat_s)

    def _before_commit(self) -> None:
        pause_point(COMMIT, self.heartbeat.info.get("job"))  # no-op unless a test asks
        self.lock.check()
        self._check_job()

    def _check_job(self) -> None:
        """Cancelled, or past its time limit? Raises to stop the job (app/worker/cancel.py)."""
        if self.job_check is not None:
            self.job_check()

    @property
    def store(self):  # noqa: ANN201 - VersionStore, kept short
        return self.parts.store

    # -- lifecycle ------------------------------------------------------------------------
    def install_signals(self) -> None:
        """First signal: stop after (or, if mid-edit, abandon) the current job. Abandoning is
        safe: nothing is half-committed, and the job re-runs first on the next start."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            self.stop.set()
            if self.busy:
                raise Stopping()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def acquire_lock(self) -> bool:
        """Wait for the editor lock, checking for a stop request every second."""
        waited = False
        while not self.stop.is_set():
            try:
                if self.lock.acquire(timeout=1.0):
                    return True
            except (redis.RedisError, OSError) as exc:
                log.warning("cannot reach Redis for the editor lock (%s)", type(exc).__name__)
                self.stop.wait(REDIS_RETRY_S)
            if not waited:
                log.warning("another worker holds the editor lock; waiting for it")
                waited = True
        return False

    def run(self) -> None:
        """Serve until stopped; after losing the lock (Redis flushed or restarted), wait for it
        again rather than edit without it."""
        while not self.stop.is_set():
            if not self.acquire_lock():
                return
            try:
                self.heartbeat = self._new_heartbeat()
                self.heartbeat.update(state="starting")
                self.heartbeat.start()
                self.follow_active()
                self._loop()
            except Stopping:
                log.info("abandoned the current job; it will run again first on restart")
            except LockLost as exc:
                log.error("%s; waiting for the lock again", exc)
            finally:
                self.heartbeat.stop()
                self.lock.release()

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        consumer = Consumer(self.queue, CONSUMER_NAME,
                            on_reset=lambda: requeue_unfinished(self.store, self.queue))
        last_sweep = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() - last_sweep > SWEEP_EVERY_S:
                    requeue_unfinished(self.store, self.queue)
                    last_sweep = time.monotonic()
                self.heartbeat.update(state="idle", version=self.parts.runtime.active)
                item = consumer.next(block_ms=self.settings.worker_block_ms)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("Redis unavailable (%s); retrying", type(exc).__name__)
                self.stop.wait(REDIS_RETRY_S)
                continue
            if item is None:
                self.follow_active()
                self.runner.gate.warm(self.parts.runtime.active)  # no-op once known
                continue
            entry_id, job_id = item
            self.lock.check()  # LockLost ends the loop: another worker may own the queue now
            self.handle(job_id)
            try:
                consumer.ack(entry_id)
            except (redis.RedisError, OSError):
                log.warning("could not ack %s; it will be delivered again (harmless)", job_id)

    def handle(self, job_id: str) -> None:
        """Run one job unless it is already finished; never raises for a job's own failure."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            log.warning("stream entry for unknown job %s dropped", job_id)
            return
        if job.finished:
            log.info("job %s already %s; skipping the repeated delivery", job_id, job.state)
            return
        if job.attempts >= MAX_ATTEMPTS:
            self._fail(job_id, f"the worker stopped {job.attempts} times while running this "
                       "job; it was given up. Check the worker log, then submit it again")
            return
        try:
            self.store.mark_running(job_id)
        except Conflict:  # cancelled since it was read
            log.info("job %s finished before it started; skipping it", job_id)
            return
        self.heartbeat.update(state="running", job=job_id)
        started = time.perf_counter()
        self.job_check = JobCheck(self.store, job_id, self.settings.job_time_limit_s)
        self.busy = True
        try:
            pause_point(RUNNING, job_id)
            version = self.runner.run(job)
        except Stopping:
            self._abandon(job_id)
            raise
        except LockLost:
            raise
        except (JobCancelled, Cancelled) as exc:
            self._cancelled(job_id, str(exc))
            self.follow_active()
            return
        except JobFailed as exc:
            self._fail(job_id, str(exc))
            return
        except JobTimedOut as exc:
            self._fail(job_id, str(exc))
            self.follow_active()
            return
        except StoreWriteError as exc:
            self._fail(job_id, f"the result could not be stored: {exc}")
            self.follow_active()
            return
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"{type(exc).__name__}: {exc}")
            self.follow_active()
            return
        finally:
            self.busy = False
            self.job_check = None
        log.info("job %s committed as %s in %.2fs", job_id, version.id,
                 time.perf_counter() - started)
        self.follow_active()
        try:
            publish_committed(self.client, self.settings.redis_prefix, version.id, job_id=job_id)
        except (redis.RedisError, OSError):
            log.warning("commit of %s not published; API processes poll the store", version.id)

    def _cancelled(self, job_id: str, reason: str) -> None:
        log.info("job %s cancelled: %s", job_id, reason)
        try:
            self.store.mark_cancelled(job_id, reason)
        except StoreWriteError:
            log.error("cannot record the cancellation of job %s; it will stop again", job_id)

    def _abandon(self, job_id: str) -> None:
        """A SIGTERM stopped the job: back to the queue, the attempt not counted (a crash
        never gets here, so a job that keeps killing the worker is still given up)."""
        try:
            self.store.abandon_job(job_id)
        except Exception as exc:  # the store is unreachable: the attempt counts, no harm
            log.warning("job %s not returned to the queue (%s)", job_id, type(exc).__name__)

    def _fail(self, job_id: str, reason: str) -> None:
        log.warning("job %s failed: %s", job_id, reason)
        try:
            self.store.fail_job(job_id, reason)
        except Conflict:
            pass  # committed meanwhile (a repeated delivery): the commit stands
        except StoreWriteError:
            log.error("cannot record the failure of job %s; it will be retried", job_id)

    def follow_active(self) -> None:
        """Hold the active version's weights so the next job starts from them."""
        try:
            active = self.store.active_version()
            if self.parts.runtime.active != active:
                self.parts.runtime.set_active(active)
        except Exception as exc:
            log.error("cannot load the active version: %s", exc)
