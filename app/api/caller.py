"""``/whoami``: what the presented token may do, so a client can hide what it cannot do.

It answers for any caller (even one whose token is wrong) and never echoes the token: it
only says which configured token matched, if any, and the name records show for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import get_settings
from app.api.schemas import WhoAmIOut
from app.api.security import bearer, resolve
from app.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/whoami", response_model=WhoAmIOut,
            summary="The scopes of the presented bearer token (read, edit, admin), never the token",
            # any caller gets an answer, with or without a token
            openapi_extra={"security": [{}]})
def whoami(
    creds: HTTPAuthorizationCredentials | None = Depends(bearer),
    settings: Settings = Depends(get_settings),
) -> WhoAmIOut:
    """`{"scopes": ["read"], "token": "read", "name": "dashboard", ...}` for a read token
    named `dashboard`; a token that matches no configured token gets only what needs none."""
    caller = resolve(settings, creds.credentials if creds else None)
    return WhoAmIOut(
        scopes=list(caller.scopes),  # type: ignore[arg-type]
        token=caller.token,  # type: ignore[arg-type]
        name=caller.name,
        read_needs_token=settings.read_token is not None,
        write_needs_token=settings.api_token is not None,
        admin_needs_token=settings.admin_token is not None,
    )
