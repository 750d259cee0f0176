"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, on /v1 only.

FastAPI's exception handlers are app-wide; these wrap the service's own handlers and answer
in OpenAI's shape only for paths under ``/v1``, so the rest of the API keeps its format.
Validation errors are 400 there (OpenAI's status for a bad request), naming the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.errors import ApiError, _validation_message, field_path, public
from app.api.openai.protocol import ENGINE_HEADER

PREFIX = "/v1"
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 503: "server_error", 504: "timeout_error"}


class OpenAIError(Exception):
    """An error to answer in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def error_response(status: int, message: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body, headers=headers)


def _on_openai(request: Request, exc: OpenAIError) -> Response:
    return error_response(exc.status, public(request, exc.message), exc.param, exc.code,
                          exc.headers)


Handler = Callable[[Request, Any], Awaitable[Response]]


def _scoped(ours: Callable[[Request, Any], Response], theirs: Handler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(PREFIX + "/") or theirs is None:
            response = ours(request, exc)
            backend = getattr(request.app.state, "openai", None)
            if backend is not None:  # errors name their engine too, as answers do
                response.headers.setdefault(ENGINE_HEADER, backend.engine)
            return response
        return await theirs(request, exc)

    return handle


def _validation(_: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if not errors:
        return error_response(400, "invalid request")
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return error_response(400, "the body is not valid JSON (UTF-8)", "body", "invalid_json")
    param = field_path(loc)
    code = "unrecognized_field" if err.get("type") == "extra_forbidden" else "invalid_value"
    return error_response(400, f"{param}: {_validation_message(err)}", param, code)


def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc.status, public(request, exc.detail), exc.field, None,
                          exc.headers)


def _http(_: Request, exc: StarletteHTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such endpoint; see /docs for the API"
    elif exc.status_code == 400 and "parsing the body" in detail:
        return error_response(400, "the body is not valid JSON (UTF-8)", "body", "invalid_json")
    return error_response(exc.status_code, detail, None, None, getattr(exc, "headers", None))


def install(app: FastAPI) -> None:
    """Answer errors under /v1 in OpenAI's shape; install after the service's handlers."""
    app.add_exception_handler(OpenAIError, _scoped(_on_openai, None))  # type: ignore[arg-type]
    for kind, ours in ((RequestValidationError, _validation), (ApiError, _api_error),
                       (StarletteHTTPException, _http)):
        app.add_exception_handler(kind, _scoped(ours, app.exception_handlers.get(kind)))
