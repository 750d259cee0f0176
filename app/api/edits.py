"""``/edits``: submit a batch of facts (202 + job id) and watch the job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Response

from app.api.deps import (
    ServingLookup,
    get_metrics,
    get_serving,
    get_settings,
    get_store,
    get_submitter,
)
from app.api.errors import ApiError
from app.api.fact_checks import Tokenizer, check_tokens, dedupe_facts, get_tokenizer, limits_of
from app.api.metrics import Metrics
from app.api.schemas import EditSubmit, ErrorOut, JobAccepted, JobOut
from app.api.schemas.edits import GateIn
from app.api.security import Caller, check_scope, get_caller, require_edit, require_read
from app.api.submit import JobSubmitter
from app.api.views import job_out
from app.settings import Settings
from app.store import Conflict, Job, JobState, NotFound, VersionStore
from app.store.payloads import EditJob
from editing import is_null_space

router = APIRouter(tags=["edits"])

ERRORS = {
    401: {"model": ErrorOut, "description": "the bearer token is missing or not valid"},
    403: {"model": ErrorOut, "description": "the token is valid but lacks the scope"},
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
    tokenizer: Tokenizer = Depends(get_tokenizer),
    _who: str = Depends(require_edit),
    caller: Caller = Depends(get_caller),
) -> JobAccepted:
    """Validate, persist and enqueue; the worker edits on the active version and commits a new
    version. Poll `GET /edits/{job_id}` until `state` is `committed` (or `failed`, or
    `cancelled`: `POST /edits/{job_id}/cancel`); a committed
    job whose batch missed the quality gate has `activated: false` and the reason under
    `gate`."""
    looser = looser_gate(body.gate, settings)
    if looser:
        check_scope(caller, "admin", f"a gate looser than the operator's ({', '.join(looser)})")
    limit = settings.max_batch
    if len(body.facts) > limit:
        raise ApiError(422, f"at most {limit} facts per job (got {len(body.facts)}); split "
                       "the batch into several jobs", field="facts")
    facts = [body.facts[i] for i in dedupe_facts(body.facts)]  # a 422 on contradictions
    check_tokens(facts, tokenizer, limits_of(settings))
    method = body.method or settings.method
    if body.covariance_weight is not None and is_null_space(method):
        raise ApiError(422, f"method {method!r} solves in the null space and has no λ: "
                       "covariance_weight would change nothing; ask for a strength "
                       "(conservative, default, strong) instead", field="covariance_weight")
    payload = EditJob(
        facts=[f.model_dump(exclude_none=True) for f in facts],
        method=method,
        gate=(body.gate.model_dump(exclude_none=True) or None) if body.gate else None,
        strength=body.strength,
        covariance_weight=body.covariance_weight,
    )
    accepted = submitter.submit(payload, body.idempotency_key, submitter=_who)
    if accepted.created:
        metrics.edits_submitted.inc()
        metrics.facts_submitted.inc(len(facts))
    return accepted


def looser_gate(gate: GateIn | None, settings: Settings) -> list[str]:
    """The thresholds of a batch's gate looser than the operator's: a lower min_efficacy or
    min_chat_efficacy, a higher max_kl. Where the operator set none, any value only adds a
    check. Loosening needs the admin scope; tightening is open to the edit scope."""
    if gate is None:
        return []
    found = []
    for name, operator, lower_is_looser in (
            ("min_efficacy", settings.gate_min_efficacy, True),
            ("min_chat_efficacy", settings.gate_min_chat_efficacy, True),
            ("max_kl", settings.gate_max_kl, False)):
        value = getattr(gate, name)
        if value is None or operator is None:
            continue
        if (value < operator) if lower_is_looser else (value > operator):
            found.append(f"gate.{name} {value:g} where the operator's is {operator:g}")
    return found


JobIdPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                 examples=["3f2a9c1e0b7d4e55a1c2d3e4f5a6b7c8"])


@router.post(
    "/edits/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job: a queued one at once, a running one at its next step",
    responses={**ERRORS, 202: {"model": JobOut, "description": "running: it stops at its "
                               "next step (poll until `state` is `cancelled`)"},
               404: {"model": ErrorOut, "description": "unknown job id"},
               409: {"model": ErrorOut, "description": "already committed or failed"}},
)
def cancel_edit(
    response: Response,
    job_id: str = JobIdPath,
    store: VersionStore = Depends(get_store),
    serving: ServingLookup = Depends(get_serving),
    who: str = Depends(require_edit),
    caller: Caller = Depends(get_caller),
) -> JobOut:
    """Any job kind (edit, revert, evaluate). A queued job becomes `cancelled` now (200); a
    running one keeps `state: running` with `cancel_requested_by` set (202) until the worker
    stops it at the next step of its edit, commits nothing and marks it `cancelled`.
    Cancelling a cancelled job again changes nothing (200). An edit token cancels the jobs
    it submitted; another's job needs the admin scope."""
    try:
        if not caller.can("admin") and store.get_job(job_id).submitter != who:
            check_scope(caller, "admin", "cancelling a job another caller submitted")
        job = store.cancel_job(job_id, who)
    except NotFound as exc:
        raise ApiError(404, str(exc), field="job_id") from exc
    except Conflict as exc:
        raise ApiError(409, str(exc), field="job_id") from exc
    if job.state == JobState.running:
        response.status_code = 202
    return _job_view(store, job, serving)


@router.get(
    "/edits/{job_id}",
    response_model=JobOut,
    summary="Where a job stands: queued, running (with progress), committed or failed",
    responses={404: {"model": ErrorOut, "description": "unknown job id"}},
)
def get_edit(
    job_id: str = JobIdPath,
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
