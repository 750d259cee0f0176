"""The FastAPI application: ``create_app(settings)``.

The lifespan builds the services once (Redis, store, model runtime, the follower that keeps
this process on the worker's active version) and closes them on shutdown. Routers get them
through dependencies, so a test can run the very same app under uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app import errors
from app.api import edits, health, query, versions
from app.metrics import Metrics
from app.middleware import BodyLimit, RequestMetrics
from app.services import Services, build_services
from app.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Write new facts into a language model's weights over HTTP.

1. `POST /edits` a batch of facts → `202 {"job_id"}`; the worker computes a weight delta
   (FE / MEMIT locate-then-edit) on the active version and commits a new version.
2. `GET /edits/{job_id}` until `state` is `committed`; `version` names the new version.
3. Ask the model: `POST /generate`, `POST /score`, `POST /next-tokens` (any version).
4. `POST /versions/{v}/rollback` restores the exact weights of any earlier version;
   `POST /versions/{v}/revert` drops one batch and keeps the later ones.

Mutating endpoints need `Authorization: Bearer <MODELEDIT_API_TOKEN>` when that is set.
Errors are JSON: `{"detail": "...", "errors": [{"field", "message"}]}`.
"""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The app; ``services`` may be given (already built), else the lifespan builds them."""
    settings = settings or (services.settings if services else Settings())
    metrics = services.metrics if services else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.services is None
        if owned:
            app.state.services = await run_in_threadpool(build_services, settings, metrics)
        try:
            yield
        finally:
            if owned and app.state.services is not None:
                app.state.services.close()

    app = FastAPI(
        title="modeledit",
        version="0.1.0",
        summary="Versioned knowledge edits (FE / MEMIT) of a language model",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    errors.install(app)
    for router in (edits.router, versions.router, query.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, requests=metrics.requests, latency=metrics.latency)
    return app
