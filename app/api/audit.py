"""``GET /audit``: the trail of active-version changes, newest first.

Each entry says what moved the active version (an edit's commit, a rollback or roll forward, a
revert, a quarantine), who (a token's name or a short hash of it, never a token; ``anonymous``
where no token was needed), from which version to which, and when. The rows are written in the
same transaction as the change (:mod:`app.store.audit`), so the trail cannot miss one.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_store
from app.api.security import require_read
from app.store import VersionStore

router = APIRouter(tags=["versions"])


class AuditOut(BaseModel):
    seq: int = Field(description="increasing; pass as `before` to page back")
    at: str = Field(description="when (UTC, ISO 8601)")
    action: str = Field(description="init, commit, rollback, roll_forward, switch, revert or "
                        "quarantine")
    actor: str | None = Field(description="who: a token's name, token-<hash> for an unnamed "
                              "token, anonymous; none for the worker's own moves")
    from_version: str | None
    to_version: str | None
    job_id: str | None = Field(description="the job whose commit or revert it was")
    detail: str | None = None

    model_config = ConfigDict(json_schema_extra={"example": {
        "seq": 3, "at": "2026-12-07T04:50:00.000Z", "action": "rollback", "actor": "ops",
        "from_version": "v2", "to_version": "v1", "job_id": None, "detail": None}})


@router.get("/audit", response_model=list[AuditOut],
            summary="Who changed the active version, from which to which, and when")
def list_audit(
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1, description="only entries older than this seq"),
    store: VersionStore = Depends(get_store),
    _who: str = Depends(require_read),
) -> list[AuditOut]:
    return [AuditOut(**entry.to_dict()) for entry in store.audit(limit, before)]
