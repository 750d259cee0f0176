"""Bodies of ``/health``, ``/ready`` and ``/whoami``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WhoAmIOut(BaseModel):
    """What the presented bearer token (or no token) may do here; never the token itself."""

    scopes: list[Literal["read", "write"]] = Field(
        description="read: queries and listings; write: edits, rollback, revert, evaluate, export"
    )
    token: Literal["none", "read", "api", "unknown"] = Field(
        description="which configured token was presented: none, the read token, the api "
        "token, or one that matches neither"
    )
    read_needs_token: bool = Field(description="MODELEDIT_READ_TOKEN is set")
    write_needs_token: bool = Field(description="MODELEDIT_API_TOKEN is set")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"scopes": ["read"], "token": "read", "read_needs_token": True,
                        "write_needs_token": True}
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

