"""Who may do what: bearer tokens for mutating and read endpoints, and per-token rate limits.

Tokens are compared in constant time and never logged or echoed; the rate limiter keys on a
hash of the token (or the client address when no token is configured), and its counters live
in Redis so the limit holds across any number of API processes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ApiError
from app.settings import Settings

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="MODELEDIT_API_TOKEN or MODELEDIT_READ_TOKEN")


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _challenge(detail: str, status: int = 401) -> ApiError:
    return ApiError(status, detail, field="Authorization",
                    headers={"WWW-Authenticate": 'Bearer realm="modeledit"'})


def identity(request: Request, token: str | None) -> str:
    """A stable, secret-free name for the caller (for rate limits and logs)."""
    if token:
        return "t:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    client = request.client.host if request.client else "unknown"
    return "ip:" + client


def _settings(request: Request) -> Settings:
    return request.app.state.services.settings


def require_read(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> str:
    """Read endpoints: open unless a read token is set; the write token also reads."""
    settings = _settings(request)
    token = creds.credentials if creds else None
    if settings.read_token is None:
        return identity(request, token)
    if token is None:
        raise _challenge("this endpoint needs 'Authorization: Bearer <read or api token>'")
    allowed = [settings.read_token.get_secret_value()]
    if settings.api_token is not None:
        allowed.append(settings.api_token.get_secret_value())
    results = [_matches(token, t) for t in allowed]  # compare with every token, not the first
    if not any(results):
        raise _challenge("the bearer token is not valid for reading", 403)
    return identity(request, token)


def require_write(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> str:
    """Mutating endpoints: the api token when one is set, then the per-caller rate limit."""
    services = request.app.state.services
    settings: Settings = services.settings
    token = creds.credentials if creds else None
    if settings.api_token is not None:
        if token is None:
            raise _challenge("this endpoint changes the model and needs "
                             "'Authorization: Bearer <MODELEDIT_API_TOKEN>'")
        if not _matches(token, settings.api_token.get_secret_value()):
            raise _challenge("the bearer token is not valid for changing the model "
                             "(a read token cannot edit)", 403)
    who = identity(request, token)
    if settings.rate_limit > 0 and services.rate_limiter is not None:
        try:
            allowed, retry_after = services.rate_limiter.hit(
                who, settings.rate_limit, settings.rate_window_s
            )
        except Exception as exc:  # Redis down: edits are still persisted, so fail open
            log.warning("rate limiter unavailable (%s); allowing the request", type(exc).__name__)
            allowed, retry_after = True, 0
        if not allowed:
            wait = max(1, int(retry_after + 0.999))
            raise ApiError(
                429,
                f"rate limit of {settings.rate_limit} changes per {settings.rate_window_s}s "
                f"reached; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
    return who


def caller_scopes(settings: Settings, token: str | None) -> tuple[list[str], str]:
    """``(scopes, which)`` for a presented token, by the same rules as :func:`require_read`
    and :func:`require_write`, so a client (the web console) can hide what it may not do
    instead of learning it from a 403. ``which`` is none, read, api or unknown."""
    api = settings.api_token.get_secret_value() if settings.api_token else None
    read = settings.read_token.get_secret_value() if settings.read_token else None
    is_api = token is not None and api is not None and _matches(token, api)
    is_read = token is not None and read is not None and _matches(token, read)
    which = "none" if token is None else "api" if is_api else "read" if is_read else "unknown"
    scopes = []
    if read is None or is_read or is_api:
        scopes.append("read")
    if api is None or is_api:
        scopes.append("write")
    return scopes, which
