"""Accepting a job: persist it first, then wake the worker (the outbox pattern).

Shared by ``POST /edits`` and the revert/evaluate routes, so every kind of job meets the same
queue limit, idempotency rules and failure messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from app.api.errors import ApiError
from app.api.metrics import Metrics
from app.api.schemas import JobAccepted
from app.queue import EditQueue
from app.store import Conflict, StoreWriteError, VersionStore
from app.store.payloads import EditJob, EvaluateJob, RevertJob

__all__ = ["RETRY_AFTER_FULL_S", "JobSubmitter"]

log = logging.getLogger(__name__)

RETRY_AFTER_FULL_S = 30


@dataclass(frozen=True)
class JobSubmitter:
    """What accepting a job needs of an API process, and nothing else."""

    store: VersionStore
    queue: EditQueue
    metrics: Metrics
    max_queue: int

    def submit(
        self, payload: EditJob | RevertJob | EvaluateJob, idempotency_key: str | None = None,
        submitter: str | None = None,
    ) -> JobAccepted:
        """Persist first, then wake the worker (outbox): a job in SQLite is never lost, even
        if Redis is down now; the worker re-enqueues unfinished jobs when it (re)starts or
        idles. The stored JSON is ``payload.to_json()``, the shape jobs always had;
        ``submitter`` (the caller's name, never a token) is stored beside it."""
        unfinished = self.store.count_unfinished()
        if unfinished >= self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                429,
                f"the edit queue is full ({unfinished} unfinished jobs, limit "
                f"{self.max_queue}); retry after {RETRY_AFTER_FULL_S}s",
                headers={"Retry-After": str(RETRY_AFTER_FULL_S)},
            )
        try:
            job, created = self.store.create_job(payload.to_json(), idempotency_key, submitter)
        except Conflict as exc:
            raise ApiError(409, str(exc), field="idempotency_key") from exc
        except StoreWriteError as exc:
            log.exception("storing a job failed")
            raise ApiError(503, "the job could not be stored (the server log says why); "
                           "retry later") from exc
        if created:
            try:
                self.queue.enqueue(job.id)
            except (RedisError, OSError) as exc:
                log.warning("job %s stored but not enqueued (%s); the worker will pick it up "
                            "from the store", job.id, type(exc).__name__)
        return JobAccepted(job_id=job.id, state=job.state, created=created)
