"""``/health`` (the process answers), ``/ready`` (it can do its job), ``/metrics``."""

from __future__ import annotations

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import get_metrics
from app.api.metrics import Metrics
from app.api.schemas import HealthOut, ReadyOut
from app.services import Services

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, summary="Liveness: the process answers")
async def health() -> HealthOut:
    """On the event loop: never waits for a thread, however busy the service is."""
    return HealthOut()


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Readiness: model loaded, Redis reachable, worker alive; the version served",
    responses={503: {"model": ReadyOut, "description": "not ready; `detail` says why"}},
)
async def ready(http: Request) -> JSONResponse:
    """`version` and `weights_sha256` identify what this process serves: equal digests across
    API processes (and the version's recorded `weights_sha256`) mean bit-identical weights.
    Not ready while the query engine is down."""
    # the blocking checks (Redis) run on two threads of /ready's own (made on first use, in
    # the app's event loop), never queued behind other work in the server's thread pool
    limiter = getattr(http.app.state, "ready_threads", None)
    if limiter is None:
        limiter = http.app.state.ready_threads = CapacityLimiter(2)
    return await to_thread.run_sync(_ready, http.app.state.services, limiter=limiter)


def _ready(services: Services) -> JSONResponse:
    redis_ok = services.redis_ok()
    worker = services.worker_alive() if redis_ok else False
    runtime = services.runtime
    problems = []
    if not redis_ok:
        problems.append("Redis does not answer")
    if not worker:
        problems.append("no editor worker is alive (start `python -m app worker`)")
    if services.follower.error:
        problems.append(services.follower.error)
    engine = services.engine
    if engine is not None and engine.draining:
        problems.append("the service is stopping")
    elif services.vllm is None and (engine is None or not engine.alive):
        problems.append("the query engine is not running")
    if services.vllm is not None and not services.vllm.sync.answered:
        problems.append("vLLM has not answered a query yet")
    body = ReadyOut(
        ready=not problems,
        model=services.parts.lm.name,
        version=runtime.active,
        weights_sha256=runtime.weights_digest(runtime.active),
        redis=redis_ok,
        worker=worker,
        queue=services.queue_length() if redis_ok else None,
        detail="; ".join(problems) or None,
    )
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump())


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(app_metrics: Metrics = Depends(get_metrics)) -> Response:
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
