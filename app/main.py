"""The FastAPI application: ``create_app(settings)``.

The lifespan builds the services once (Redis, store, model runtime, the follower that keeps
this process on the worker's active version) and closes them on shutdown. Routers get them
through dependencies, so a test can run the very same app under uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app import console
from app.api import audit, caller, edits, errors, facts, health, query, versions
from app.api.caller_limit import CallerLimit
from app.api.context import RequestContext
from app.api.metrics import Metrics
from app.api.middleware import BodyLimit, RequestMetrics
from app.api.openai import router as openai_api
from app.api.openai.backend import OpenAIBackend
from app.api.openai.embedded import EmbeddedBackend
from app.api.schemas import ErrorOut
from app.api.security import require_admin, require_edit, require_read
from app.services import Services, build_services
from app.settings import Settings
from app.vllm.backend import VllmBackend

log = logging.getLogger(__name__)

DESCRIPTION = """
Write new facts into a language model's weights over HTTP.

1. `POST /edits` a batch of facts → `202 {"job_id"}`; the worker computes a weight delta
   (FE / MEMIT locate-then-edit) on the active version and commits a new version.
2. `GET /edits/{job_id}` until `state` is `committed`; `version` names the new version.
3. Ask the model: `POST /generate`, `POST /score`, `POST /next-tokens` (any version).
4. `POST /versions/{v}/rollback` restores the exact weights of any earlier version;
   `POST /versions/{v}/revert` drops one batch and keeps the later ones.
5. `GET /facts?q=...` searches the facts a version knows and which batch taught each.
6. OpenAI-compatible: `GET /v1/models` (every version is a model, plus `active`),
   `POST /v1/completions`, `POST /v1/chat/completions` (streaming too); any OpenAI SDK works
   with `base_url=http://host:port/v1` and the read token as `api_key`.

A web console for all of this is served at `/console`.

Mutating endpoints need `Authorization: Bearer <MODELEDIT_API_TOKEN>` when that is set.
Errors are JSON: `{"detail": "...", "errors": [{"field", "message"}]}`.
"""

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body is not JSON encoded as UTF-8"},
    413: {"model": ErrorOut, "description": "the body is over MODELEDIT_MAX_BODY_BYTES"},
    422: {"model": ErrorOut, "description": "invalid input; the message names the field"},
}
"""Errors any route can answer (the handlers in :mod:`app.api.errors` and the body limit), so the
schema documents them everywhere; without this FastAPI documents its own 422 shape
(``detail`` as a list), which is not what :mod:`app.api.errors` sends (found by schemathesis)."""


def _guard(dependant: Dependant) -> Any:
    """The security dependency (require_read / require_edit / require_admin) a route uses."""
    for dep in dependant.dependencies:
        if dep.call in (require_read, require_edit, require_admin):
            return dep.call
        found = _guard(dep)
        if found is not None:
            return found
    return None


def _optional_security(app: FastAPI, settings: Settings, routers: list[APIRouter]) -> None:
    """Document bearer auth as optional (``security: [{}, {HTTPBearer: []}]``) on routes whose
    token is not configured: they really accept anonymous requests, and a schema that says
    otherwise misleads client generators and schema-driven tests (found by schemathesis)."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base_openapi()
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute):
                continue
            guard = _guard(route.dependant)
            token = {require_edit: settings.api_token, require_read: settings.read_token,
                     require_admin: settings.admin_token or settings.api_token}.get(guard)
            if guard is None or token is not None:
                continue
            for method in route.methods:
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation and operation.get("security") and {} not in operation["security"]:
                    operation["security"] = [{}, *operation["security"]]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def openai_backend(services: Services) -> OpenAIBackend:
    """The engine that answers ``/v1``, chosen once: vLLM when ``MODELEDIT_VLLM_URL`` is set,
    else this process's batch engine."""
    if services.vllm is not None:
        return VllmBackend(services.vllm.proxy, services.parts, services.settings)
    return EmbeddedBackend(services)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The app; ``services`` may be given (already built), else the lifespan builds them."""
    settings = settings or (services.settings if services else Settings())
    metrics = services.metrics if services else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.services is None
        if owned:
            app.state.services = await run_in_threadpool(build_services, settings, metrics)
        app.state.openai = openai_backend(app.state.services)
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
        responses=COMMON_ERRORS,
    )
    app.state.services = services
    errors.install(app)
    routers = [edits.router, versions.router, facts.router, query.router, health.router,
               caller.router, audit.router]
    for router in routers:
        app.include_router(router)
    openai_api.install(app)
    _optional_security(app, settings, [*routers, openai_api.router])
    console.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CallerLimit, limit=settings.max_queries_per_caller,
                       by_token=settings.read_token is not None,
                       trusted=frozenset(p.strip() for p in settings.trusted_proxies.split(",")
                                         if p.strip()))
    app.add_middleware(RequestMetrics, requests=metrics.requests, latency=metrics.latency)
    app.add_middleware(RequestContext)  # outermost: every answer gets its request id
    return app
