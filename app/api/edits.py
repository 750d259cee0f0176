"""``/edits``: submit a batch of facts (202 + job id) and watch the job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from app.api.deps import (
    ServingLookup,
    get_metrics,
    get_serving,
    get_settings,
    get_store,
    get_submitter,
)
from app.api.errors import ApiError
from app.api.metrics import Metrics
from app.api.schemas import EditSubmit, ErrorOut, JobAccepted, JobOut
from app.api.security import require_read, require_write
from app.api.submit import JobSubmitter
from app.api.views import job_out
from app.settings import Settings
from app.store import Job, JobState, NotFound, VersionStore
from app.store.payloads import EditJob
from editing.methods import is_null_space

router = APIRouter(tags=["edits"])

ERRORS = {
    401: {"model": ErrorOut, "description": "a bearer token is needed"},
    403: {"model": ErrorOut, "description": "the token is not valid here"},
    422: {"model": ErrorOut, "description": "invalid input; the message names the field"},
}


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
    settings: Settings = Depends(get_settings),
    submitter: JobSubmitter = Depends(get_submitter),
    metrics: Metrics = Depends(get_metrics),
    _who: str = Depends(require_write),
) -> JobAccepted:
    """Validate, persist and enqueue; the worker edits on the active version and commits a new
    version. Poll `GET /edits/{job_id}` until `state` is `committed` (or `failed`); a committed
    job whose batch missed the quality gate has `activated: false` and the reason under
    `gate`."""
    limit = settings.max_batch
    if len(body.facts) > limit:
        raise ApiError(422, f"at most {limit} facts per job (got {len(body.facts)}); split "
                       "the batch into several jobs", field="facts")
    method = body.method or settings.method
    if body.covariance_weight is not None and is_null_space(method):
        raise ApiError(422, f"method {method!r} solves in the null space and has no λ: "
                       "covariance_weight would change nothing; ask for a strength "
                       "(conservative, default, strong) instead", field="covariance_weight")
    payload = EditJob(
        facts=[f.model_dump(exclude_none=True) for f in body.facts],
        method=method,
        gate=(body.gate.model_dump(exclude_none=True) or None) if body.gate else None,
        strength=body.strength,
        covariance_weight=body.covariance_weight,
    )
    accepted = submitter.submit(payload, body.idempotency_key)
    if accepted.created:
        metrics.edits_submitted.inc()
        metrics.facts_submitted.inc(len(body.facts))
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
    store: VersionStore = Depends(get_store),
    serving: ServingLookup = Depends(get_serving),
    _who: str = Depends(require_read),
) -> JobOut:
    try:
        return _job_view(store, store.get_job(job_id), serving)
    except NotFound as exc:
        raise ApiError(404, str(exc), field="job_id") from exc


def _job_view(store: VersionStore, job: Job, serving: ServingLookup) -> JobOut:
    """The job with its committed version's gate verdict (edit jobs only)."""
    version = None
    if job.version is not None and job.payload.get("kind", "edit") == "edit":
        try:
            version = store.get_version(job.version)
        except NotFound:
            version = None
    return job_out(job, version, serving(job.version))


@router.get(
    "/edits",
    response_model=list[JobOut],
    summary="Recent jobs, newest first",
)
def list_edits(
    state: JobState | None = Query(None),
    limit: int = Query(50, ge=1, le=1000),
    store: VersionStore = Depends(get_store),
    serving: ServingLookup = Depends(get_serving),
    _who: str = Depends(require_read),
) -> list[JobOut]:
    jobs = store.list_jobs([state] if state else None, limit)
    return [_job_view(store, j, serving) for j in jobs]
