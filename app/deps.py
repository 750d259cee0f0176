"""FastAPI dependencies: routers ask for what they need, never reach for globals."""

from __future__ import annotations

from fastapi import Request

from app.runtime import ModelRuntime
from app.services import Services
from app.settings import Settings
from app.store import VersionStore


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings(request: Request) -> Settings:
    return request.app.state.services.settings


def get_store(request: Request) -> VersionStore:
    return request.app.state.services.store


def get_runtime(request: Request) -> ModelRuntime:
    return request.app.state.services.runtime
