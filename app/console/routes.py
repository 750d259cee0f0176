"""Routes of the web console: ``/`` and ``/console`` redirect to ``/console/``, whose files
are served from ``static/`` (``index.html`` for the directory)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.console.headers import CONSOLE_PREFIX, ConsoleHeaders

STATIC = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console on ``app`` (outside the OpenAPI schema: it is not an API)."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(CONSOLE_PREFIX + "/", status_code=307)

    @app.get(CONSOLE_PREFIX, include_in_schema=False)
    def console() -> RedirectResponse:
        return RedirectResponse(CONSOLE_PREFIX + "/", status_code=307)

    app.mount(CONSOLE_PREFIX, StaticFiles(directory=STATIC, html=True), name="console")
    app.add_middleware(ConsoleHeaders)
