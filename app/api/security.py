"""Who may do what: three scopes (read, edit, admin), per-token rate limits, and the name the
audit trail records for a caller.

* **read** (``MODELEDIT_READ_TOKEN``): queries and listings. Open to anyone, with any key or
  none, while no read token is configured (OpenAI's SDK always sends a key).
* **edit** (``MODELEDIT_API_TOKEN``): submit edits and evaluations within the operator's
  quality gate, cancel its own jobs.
* **admin** (``MODELEDIT_ADMIN_TOKEN``): rollback, roll forward, revert, exports, cancel any
  job, and a gate looser than the operator's. Without an admin token the edit token holds
  admin rights (as before scopes existed).

Admin includes edit includes read. A scope is open when no token for it is configured (admin:
when neither an admin nor an edit token is). Where a token is needed, a missing or unknown one
is a 401 with ``WWW-Authenticate``; a valid token without the scope is a 403. A token setting
may be ``name:secret``: the name is what the audit trail and job records show; an unnamed
token is shown as ``token-`` and 8 hex digits of its SHA-256. Tokens are compared in constant
time with every configured token and are never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.api.errors import ApiError
from app.settings import Settings

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="MODELEDIT_READ_TOKEN, MODELEDIT_API_TOKEN "
                    "(edit) or MODELEDIT_ADMIN_TOKEN")

SCOPES = ("read", "edit", "admin")
ANONYMOUS = "anonymous"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,40}$")
_ENV = {"read": "MODELEDIT_READ_TOKEN", "edit": "MODELEDIT_API_TOKEN",
        "admin": "MODELEDIT_ADMIN_TOKEN"}


@dataclass(frozen=True)
class TokenSpec:
    """One configured token: its scope, its optional name and its secret."""

    scope: str
    name: str | None
    secret: str

    @property
    def label(self) -> str:
        """What records show for this token: its name, or a short hash (never the secret)."""
        return self.name or "token-" + hashlib.sha256(self.secret.encode()).hexdigest()[:8]


def parse_token(value: str, scope: str) -> TokenSpec:
    """``name:secret`` (a name of letters, digits and ``_.@-``) or a bare secret."""
    name, sep, secret = value.partition(":")
    if sep and secret and _NAME.match(name):
        return TokenSpec(scope, name, secret)
    return TokenSpec(scope, None, value)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def configured(settings: Settings) -> dict[str, TokenSpec]:
    """The configured tokens by scope (absent scopes are open)."""
    values = {"read": _secret(settings.read_token), "edit": _secret(settings.api_token),
              "admin": _secret(settings.admin_token)}
    return {scope: parse_token(v, scope) for scope, v in values.items() if v}


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as the tokens tell: scopes, which token matched, and a name."""

    scopes: tuple[str, ...]
    token: str
    """none, read, edit, admin, or unknown (a key that matches no configured token)."""
    name: str
    """The matched token's label, or ``anonymous``: what job records and the audit show."""
    tokens: frozenset[str]
    """The scopes that have a token configured (where a missing key is a 401)."""

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def resolve(settings: Settings, token: str | None) -> Caller:
    """The caller a presented token (or none) makes, by the rules of the module docstring."""
    specs = configured(settings)
    matched: TokenSpec | None = None
    for scope in ("admin", "edit", "read"):  # compare with every token, not just the first
        spec = specs.get(scope)
        if spec is not None and token is not None and _matches(token, spec.secret) \
                and matched is None:
            matched = spec
    rank = SCOPES.index(matched.scope) if matched else -1  # read 0, edit 1, admin 2
    granted = {
        "read": "read" not in specs or rank >= 0,
        "edit": "edit" not in specs or rank >= 1,
        # without an admin token, admin rights go with the edit scope
        "admin": rank >= 2 if "admin" in specs else ("edit" not in specs or rank >= 1),
    }
    scopes = [scope for scope in SCOPES if granted[scope]]
    which = "none" if token is None else matched.scope if matched else "unknown"
    return Caller(tuple(scopes), which, matched.label if matched else ANONYMOUS,
                  frozenset(specs))


def _challenge(detail: str) -> ApiError:
    return ApiError(401, detail, field="Authorization",
                    headers={"WWW-Authenticate": 'Bearer realm="modeledit"'})


def check_scope(caller: Caller, scope: str, what: str) -> None:
    """401 for a missing or unknown key, 403 for a valid key without ``scope``."""
    if caller.can(scope):
        return
    needed = "MODELEDIT_ADMIN_TOKEN" if scope == "admin" and "admin" in caller.tokens else \
        _ENV["edit"] if scope in ("edit", "admin") else "the read, edit or admin token"
    if caller.token in ("none", "unknown"):
        state = "is missing" if caller.token == "none" else "is not valid here"
        raise _challenge(f"{what} needs 'Authorization: Bearer <{needed}>'; the key {state}")
    raise ApiError(403, f"{what} needs the {scope} scope; this {caller.token} token does not "
                   f"have it ({needed})", field="Authorization")


def identity(request: Request, token: str | None) -> str:
    """A stable, secret-free key for the caller's rate limit."""
    if token:
        return "t:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    client = request.client.host if request.client else "unknown"
    return "ip:" + client


def _settings(request: Request) -> Settings:
    return request.app.state.services.settings


def _token(creds: HTTPAuthorizationCredentials | None) -> str | None:
    return creds.credentials if creds else None


def get_caller(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Caller:
    """The caller, unchecked (for rules finer than a route's scope: own jobs, the gate)."""
    return resolve(_settings(request), _token(creds))


async def require_read(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> str:
    """Read endpoints; returns the caller's name. Async: it never blocks, so it does not
    take a thread of the pool that synchronous handlers share."""
    caller = resolve(_settings(request), _token(creds))
    check_scope(caller, "read", "this endpoint")
    return caller.name


def _rate_limit(request: Request, token: str | None) -> None:
    services = request.app.state.services
    settings: Settings = services.settings
    if settings.rate_limit <= 0 or services.rate_limiter is None:
        return
    try:
        allowed, retry_after = services.rate_limiter.hit(
            identity(request, token), settings.rate_limit, settings.rate_window_s)
    except Exception as exc:  # Redis down: edits are still persisted, so fail open
        log.warning("rate limiter unavailable (%s); allowing the request", type(exc).__name__)
        return
    if not allowed:
        wait = max(1, int(retry_after + 0.999))
        raise ApiError(429, f"rate limit of {settings.rate_limit} changes per "
                       f"{settings.rate_window_s}s reached; retry in {wait}s",
                       headers={"Retry-After": str(wait)})


def _scoped(scope: str, what: str, doc: str) -> Callable[..., str]:
    """A dependency that admits callers holding ``scope``, then applies the per-caller rate
    limit; it returns the caller's name (what the job records and the audit show)."""

    def dependency(
        request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> str:
        caller = resolve(_settings(request), _token(creds))
        check_scope(caller, scope, what)
        _rate_limit(request, _token(creds))
        return caller.name

    dependency.__doc__ = doc
    return dependency


require_edit = _scoped("edit", "this endpoint changes the model and",
                       "Edit-scope endpoints, then the per-caller rate limit.")
require_admin = _scoped("admin", "this endpoint",
                        "Admin-scope endpoints (rollback, revert, export), then the rate limit.")


def caller_scopes(settings: Settings, token: str | None) -> tuple[list[str], str]:
    """``(scopes, which)`` for a presented token (``/whoami``), by the same rules as the
    route guards, so a client (the web console) can hide what it may not do."""
    caller = resolve(settings, token)
    return list(caller.scopes), caller.token


# -- start-up -----------------------------------------------------------------------------------
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Exposure:
    """What start-up says about the tokens for the address it binds: a refusal, warnings,
    notes (none of them ever contains a token)."""

    refusal: str | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


def exposure(settings: Settings) -> Exposure:
    """Beyond loopback with no edit token: refused unless MODELEDIT_ALLOW_UNAUTHENTICATED=1
    (anyone who reaches the port could rewrite the model). Beyond loopback without a read token:
    a warning that reads are open. No admin token: a note that the edit token holds admin
    rights."""
    exposed = settings.host not in LOOPBACK
    specs = configured(settings)
    refusal, warnings, notes = None, [], []
    if exposed and "edit" not in specs:
        message = (f"binding to {settings.host} with no MODELEDIT_API_TOKEN: anyone who can "
                   "reach this port could rewrite the model.")
        how = ("Start with a token: MODELEDIT_API_TOKEN=$(openssl rand -hex 16) (in Docker: "
               "docker run -e MODELEDIT_API_TOKEN=... ; optionally MODELEDIT_ADMIN_TOKEN and "
               "MODELEDIT_READ_TOKEN, each may be name:secret), or bind to 127.0.0.1, or set "
               "MODELEDIT_ALLOW_UNAUTHENTICATED=1 to run open on purpose. See docs/service.md.")
        if settings.allow_unauthenticated:
            warnings.append(message + " MODELEDIT_ALLOW_UNAUTHENTICATED=1 allows it.")
        else:
            refusal = f"refusing to start: {message}\n{how}"
    if exposed and "read" not in specs:
        warnings.append(f"reads are open: no MODELEDIT_READ_TOKEN, so anyone who reaches "
                        f"{settings.host}:{settings.port} may query the model and list versions, "
                        "jobs, facts and the audit trail.")
    if "edit" in specs and "admin" not in specs:
        notes.append("no MODELEDIT_ADMIN_TOKEN: the edit token (MODELEDIT_API_TOKEN) holds "
                     "admin rights (rollback, revert, exports, looser gates).")
    return Exposure(refusal, tuple(warnings), tuple(notes))
