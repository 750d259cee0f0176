"""``/edits``: submit a batch of facts (202 + job id) and watch the job."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Path, Query
from redis.exceptions import RedisError

from app.deps import get_services
from app.errors import ApiError
from app.schemas import EditSubmit, ErrorOut, JobAccepted, JobOut
from app.security import require_read, require_write
from app.services import Services
from app.store import Conflict, NotFound, StoreWriteError
from app.views import job_out

log = logging.getLogger(__name__)

router = APIRouter(tags=["edits"])

RETRY_AFTER_FULL_S = 30
ERRORS = {
    401: {"model": ErrorOut, "description": "a bearer token is needed"},
    403: {"model": ErrorOut, "description": "the token is not valid here"},
    422: {"model": ErrorOut, "description": "invalid input; the message names the field"},
}


def enqueue_job(services: Services, payload: dict, idempotency_key: str | None) -> JobAccepted:
    """Persist first, then wake the worker (outbox): a job in SQLite is never lost, even if
    Redis is down now; the worker re-enqueues unfinished jobs when it (re)starts or idles."""
    unfinished = services.store.count_unfinished()
    if unfinished >= services.settings.max_queue:
        services.metrics.rejected.labels("queue_full").inc()
        raise ApiError(
            429,
            f"the edit queue is full ({unfinished} unfinished jobs, limit "
            f"{services.settings.max_queue}); retry after {RETRY_AFTER_FULL_S}s",
            headers={"Retry-After": str(RETRY_AFTER_FULL_S)},
        )
    try:
        job, created = services.store.create_job(payload, idempotency_key)
    except Conflict as exc:
        raise ApiError(409, str(exc), field="idempotency_key") from exc
    except StoreWriteError as exc:
        raise ApiError(503, f"the job could not be stored: {exc}") from exc
    if created:
        try:
            services.queue.enqueue(job.id)
        except (RedisError, OSError) as exc:
            log.warning("job %s stored but not enqueued (%s); the worker will pick it up "
                        "from the store", job.id, type(exc).__name__)
    return JobAccepted(job_id=job.id, state=job.state, created=created)  # type: ignore[arg-type]


@router.post(
    "/edits",
    status_code=202,
    response_model=JobAccepted,
    summary="Submit a batch of facts to write into the model",
    responses={**ERRORS, 409: {"model": ErrorOut, "description": "idempotency key reused"},
               429: {"model": ErrorOut, "description": "queue full or rate limit"}},
)
def submit_edits(
    body: EditSubmit,
    services: Services = Depends(get_services),
    _who: str = Depends(require_write),
) -> JobAccepted:
    """Validate, persist and enqueue; the worker edits on the active version and commits a new
    version. Poll `GET /edits/{job_id}` until `state` is `committed` (or `failed`)."""
    limit = services.settings.max_batch
    if len(body.facts) > limit:
        raise ApiError(422, f"at most {limit} facts per job (got {len(body.facts)}); split "
                       "the batch into several jobs", field="facts")
    payload = {
        "kind": "edit",
        "facts": [f.model_dump(exclude_none=True) for f in body.facts],
        "method": body.method or services.settings.method,
    }
    accepted = enqueue_job(services, payload, body.idempotency_key)
    if accepted.created:
        services.metrics.edits_submitted.inc()
        services.metrics.facts_submitted.inc(len(body.facts))
    return accepted


@router.get(
    "/edits/{job_id}",
    response_model=JobOut,
    summary="Where a job stands: queued, running (with progress), committed or failed",
    responses={404: {"model": ErrorOut, "description": "unknown job id"}},
)
def get_edit(
    job_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                       examples=["3f2a9c1e0b7d4e55a1c2d3e4f5a6b7c8"]),
    services: Services = Depends(get_services),
    _who: str = Depends(require_read),
) -> JobOut:
    try:
        return job_out(services.store.get_job(job_id))
    except NotFound as exc:
        raise ApiError(404, str(exc), field="job_id") from exc


@router.get(
    "/edits",
    response_model=list[JobOut],
    summary="Recent jobs, newest first",
)
def list_edits(
    state: str | None = Query(None, pattern=r"^(queued|running|committed|failed)$"),
    limit: int = Query(50, ge=1, le=1000),
    services: Services = Depends(get_services),
    _who: str = Depends(require_read),
) -> list[JobOut]:
    jobs = services.store.list_jobs([state] if state else None, limit)
    return [job_out(j) for j in jobs]
