"""Bodies of ``/health``, ``/ready`` and ``/whoami``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WhoAmIOut(BaseModel):
    """What the presented bearer token (or no token) may do here; never the token itself."""

    scopes: list[Literal["read", "edit", "admin"]] = Field(
        description="read: queries and listings; edit: submit edits and evaluations within "
        "the operator's gate, cancel its own jobs; admin: rollback, revert, exports, any "
        "job's cancel, a looser gate (admin includes edit includes read)"
    )
    token: Literal["none", "read", "edit", "admin", "unknown"] = Field(
        description="which configured token was presented: none, the read, edit (API) or "
        "admin token, or one that matches none of them"
    )
    name: str = Field(description="what job records and the audit trail show for this "
                      "caller: the token's name, a short hash of an unnamed token, or anonymous")
    read_needs_token: bool = Field(description="MODELEDIT_READ_TOKEN is set")
    write_needs_token: bool = Field(description="MODELEDIT_API_TOKEN (edit) is set")
    admin_needs_token: bool = Field(description="MODELEDIT_ADMIN_TOKEN is set (else the edit "
                                    "token holds admin rights)")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"scopes": ["read"], "token": "read", "name": "dashboard",
                        "read_needs_token": True, "write_needs_token": True,
                        "admin_needs_token": True}
        }
    )


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"

    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})


class ReadyOut(BaseModel):
    ready: bool
    model: str
    version: str | None = Field(description="the version this API process serves")
    weights_sha256: str | None = Field(
        description="sha256 of every MLP output matrix it serves (equal across processes)"
    )
    redis: bool
    worker: bool
    queue: int | None = None
    detail: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"ready": True, "model": "smollm2-135m", "version": "v2",
                        "weights_sha256": "9b1c…", "redis": True, "worker": True, "queue": 0,
                        "detail": None}
        }
    )

