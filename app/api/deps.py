"""FastAPI dependencies: routers ask for the parts they use, never reach for globals.

A route that needs one or two parts asks for them here rather than for the whole
:class:`Services`, so its signature says what it touches and a test can pass just those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from app.api.metrics import Metrics
from app.api.submit import JobSubmitter
from app.services import ModelParts, Services
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from app.store import VersionStore


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings(request: Request) -> Settings:
    return get_services(request).settings


def get_store(request: Request) -> VersionStore:
    return get_services(request).store


def get_runtime(request: Request) -> ModelRuntime:
    return get_services(request).runtime


def get_parts(request: Request) -> ModelParts:
    """The model, its store and the runtime serving it (what querying and exporting use)."""
    return get_services(request).parts


def get_metrics(request: Request) -> Metrics:
    return get_services(request).metrics


def get_submitter(request: Request) -> JobSubmitter:
    services = get_services(request)
    return JobSubmitter(services.store, services.queue, services.metrics,
                        services.settings.max_queue)


ServingLookup = Callable[[str | None], dict[str, Any] | None]


def _not_served(_version: str | None) -> None:
    return None


def get_serving(request: Request) -> ServingLookup:
    """Whether vLLM serves a version (``MODELEDIT_VLLM_URL``); without vLLM, always None."""
    vllm = get_services(request).vllm
    return vllm.sync.state_of if vllm is not None else _not_served
