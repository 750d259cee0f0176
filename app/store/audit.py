"""The audit trail: every change of the active version, who made it, from which to which.

Rows are written inside the transaction that moves the pointer (:func:`point_active`), so the
trail and the pointer never disagree: a change without its row, or a row without its change,
would need a transaction to half-commit. ``actor`` is a name the API derived from a token (its
configured name or a short hash), never a token.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from app.store.connection import get_meta, set_meta
from app.store.records import now

__all__ = ["ACTIONS", "AuditEntry", "list_entries", "point_active"]

ACTIONS = ("init", "commit", "rollback", "roll_forward", "switch", "revert", "quarantine")
"""``init``: the base became active in a new store; ``commit``: an edit's version became
active; ``rollback`` / ``roll_forward``: an operator moved to an ancestor / a descendant of the
active version (``switch``: to neither, another branch); ``revert``: a revert job's result;
``quarantine``: a version was found unusable and the pointer fell back to an ancestor."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    action: str
    actor: str | None
    from_version: str | None
    to_version: str | None
    job_id: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def point_active(conn: sqlite3.Connection, vid: str, action: str, actor: str | None = None,
                 job_id: str | None = None, detail: str | None = None) -> None:
    """Inside the caller's transaction: make ``vid`` active and, if that changes anything,
    record who did it and why."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    current = get_meta(conn, "active")
    set_meta(conn, "active", vid)
    if current != vid:
        conn.execute(
            "INSERT INTO audit(at, action, actor, from_version, to_version, job_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now(), action, actor, current, vid, job_id, detail),
        )


def list_entries(conn: sqlite3.Connection, limit: int = 100,
                 before: int | None = None) -> list[AuditEntry]:
    """Newest first; ``before`` (a ``seq``) pages back through older entries."""
    sql, args = "SELECT * FROM audit", []
    if before is not None:
        sql += " WHERE seq < ?"
        args.append(int(before))
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(int(limit))
    return [AuditEntry(**{k: row[k] for k in row.keys()}) for row in conn.execute(sql, args)]
