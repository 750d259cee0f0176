"""Every error leaves the API as JSON ``{"detail", "errors": [{"field", "message"}]}``.

Bad input must never surface as a 500: validation errors name the field in the same dotted
path the client sent (``facts[0].prompt``), store and delta errors map to 404/409, and any
unexpected exception becomes a 500 whose body reveals nothing (no tokens, no paths).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a message that tells the client what to fix."""

    def __init__(
        self,
        status: int,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def error_body(detail: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"detail": detail, "errors": errors or []}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "facts", 0, "prompt")`` -> ``facts[0].prompt``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _validation_message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "json_invalid":
        return "the body is not valid JSON (UTF-8); check quotes, commas and encoding"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field; check its spelling against the API docs"
    return msg


async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        message = _validation_message(err)
        if err.get("type") == "json_invalid":  # loc is ("body", <character position>)
            if len(loc) > 1:
                message += f" (near character {loc[1]})"
            loc = ("body",)
        errors.append({"field": field_path(loc), "message": message})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more error(s), see 'errors')"
    return JSONResponse(status_code=422, content=error_body(detail, errors))


def public(request: Request, text: str) -> str:
    """``text`` without the server's locations (data directory, model path, vLLM's URL and
    adapter directory): an error message from deep inside (a delta file that cannot be read)
    may name them; the log keeps the original."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return text
    settings = services.settings
    hidden = {str(settings.data_path): "<data_dir>", str(settings.data_dir): "<data_dir>",
              settings.model: "<model>", str(settings.vllm_url or ""): "<vllm>",
              str(settings.vllm_adapter_dir or ""): "<adapters>"}
    out = text
    for where, name in sorted(hidden.items(), key=lambda kv: -len(kv[0])):
        if len(where) > 1 and ("/" in where or ":" in where) and where in out:
            out = out.replace(where, name)
    if out != text:
        log.info("error message redacted for the client: %s", text)
    return out


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    detail = public(request, exc.detail)
    errors = [{"field": exc.field, "message": detail}] if exc.field else []
    return JSONResponse(status_code=exc.status, content=error_body(detail, errors),
                        headers=exc.headers)


async def _on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    errors: list[dict[str, str]] = []
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such endpoint; see /docs for the API"
    elif exc.status_code == 405:
        detail = "method not allowed on this endpoint; see /docs for the API"
    elif exc.status_code == 400 and "parsing the body" in detail:
        detail = "body: could not be parsed; send JSON encoded as UTF-8"
        errors = [{"field": "body", "message": "not JSON encoded as UTF-8"}]
    return JSONResponse(status_code=exc.status_code, content=error_body(detail, errors),
                        headers=getattr(exc, "headers", None))


async def _on_unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error: %s", type(exc).__name__)
    return JSONResponse(
        status_code=500,
        content=error_body("internal error; the request was not applied. See the server log."),
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)
