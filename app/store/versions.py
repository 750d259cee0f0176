"""The versions table, lineage (chains) and the active pointer.

Functions taking a ``Database`` run their own short transaction; those taking a connection
run inside the caller's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.store.audit import point_active
from app.store.connection import Database, get_meta
from app.store.errors import Conflict, NotFound, StoreError
from app.store.records import (
    VERSION_KINDS,
    NewVersion,
    StoredFile,
    Version,
    dumps,
    now,
    version_from_row,
)
from app.store.tables import BASE_ID

__all__ = [
    "active",
    "chain",
    "ensure_base",
    "find_step",
    "get",
    "insert",
    "list_versions",
    "mark_failed",
    "move_active",
    "require_usable",
    "set_active",
    "set_evaluation",
]


def get(conn: sqlite3.Connection, vid: str) -> Version:
    row = conn.execute("SELECT * FROM versions WHERE id = ?", (vid,)).fetchone()
    if row is None:
        raise NotFound(f"no version {vid!r}; list versions with GET /versions")
    return version_from_row(row)


def list_versions(conn: sqlite3.Connection) -> list[Version]:
    """All versions in creation order (the base first)."""
    return [version_from_row(r) for r in conn.execute("SELECT * FROM versions ORDER BY seq")]


def find_step(conn: sqlite3.Connection, origin_job: str, step: int | None) -> Version | None:
    """The version a revert job derived at ``step``, if it already committed it."""
    row = conn.execute(
        "SELECT * FROM versions WHERE origin_job = ? AND step = ?", (origin_job, step)
    ).fetchone()
    return None if row is None else version_from_row(row)


def require_usable(version: Version) -> None:
    """:class:`Conflict` unless ``version`` is committed (its weights can be rebuilt)."""
    if version.state != "committed":
        raise Conflict(
            f"version {version.id} is {version.state}"
            + (f" ({version.error})" if version.error else "")
            + "; choose a committed version (GET /versions)"
        )


def chain(conn: sqlite3.Connection, vid: str) -> list[Version]:
    """The lineage of ``vid``: the base first, then each descendant down to ``vid``."""
    found: list[Version] = []
    seen: set[str] = set()
    current: str | None = vid
    while current is not None:
        if current in seen:  # cannot happen through this API; guards a hand-edited DB
            raise StoreError(f"version lineage of {vid} has a cycle at {current}")
        seen.add(current)
        version = get(conn, current)
        found.append(version)
        current = version.parent
    found.reverse()
    return found


def ensure_base(db: Database, data_dir: Path, model_name: str, fingerprint: str) -> Version:
    """Create the base version ``v0`` once; refuse a data dir made for another model."""
    with db.write() as conn:
        row = conn.execute("SELECT * FROM versions WHERE kind = 'base'").fetchone()
        if row is not None:
            base = version_from_row(row)
            if base.fingerprint != fingerprint:
                raise StoreError(
                    f"the data directory {data_dir} belongs to another model "
                    f"({base.model_name!r}, fingerprint {str(base.fingerprint)[:12]}…), "
                    f"not {model_name!r} ({fingerprint[:12]}…); use another --data-dir "
                    "or the model it was made for (in the dtype it was made with: "
                    "MODELEDIT_DTYPE changes the fingerprint)"
                )
        else:
            conn.execute(
                "INSERT INTO versions(id, parent, state, kind, model_name, fingerprint, "
                "method, created_at) VALUES (?, NULL, 'committed', 'base', ?, ?, 'base', ?)",
                (BASE_ID, model_name, fingerprint, now()),
            )
            base = get(conn, BASE_ID)
        if get_meta(conn, "active") is None:
            point_active(conn, base.id, "init")
        return base


def insert(conn: sqlite3.Connection, new: NewVersion, file: StoredFile) -> str:
    """Insert ``new`` (whose delta is ``file``) on top of its usable parent; returns its id.
    Model name and fingerprint are inherited from the parent."""
    if new.kind not in VERSION_KINDS or new.kind == "base":
        raise StoreError(f"kind must be one of {VERSION_KINDS[1:]}, not {new.kind!r}")
    parent = get(conn, new.parent)
    require_usable(parent)
    n = conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
    if n == 0:
        raise StoreError("the store has no base version; call ensure_base() first")
    vid = f"v{n}"
    conn.execute(
        "INSERT INTO versions(id, parent, job_id, origin_job, step, state, kind, "
        "file_sha256, delta_sha256, delta_path, size_bytes, model_name, fingerprint, "
        "method, hparams, facts, layer_stats, diagnostics, timings, source, created_at) "
        "VALUES (?, ?, ?, ?, ?, 'committed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            vid,
            new.parent,
            new.job_id,
            new.origin_job,
            new.step,
            new.kind,
            file.sha256,
            new.delta_sha256,
            file.rel,
            file.size,
            parent.model_name,
            parent.fingerprint,
            new.method,
            dumps(new.hparams or {}),
            dumps(new.facts or []),
            dumps(new.layer_stats),
            dumps(new.diagnostics or {}),
            dumps(new.timings or {}),
            None if new.source is None else dumps(new.source),
            now(),
        ),
    )
    return vid


# -- the active pointer -----------------------------------------------------------------------
def active(conn: sqlite3.Connection) -> str:
    """The active version id; :class:`StoreError` before :func:`ensure_base`."""
    value = get_meta(conn, "active")
    if value is None:
        raise StoreError("the store has no active version yet; call ensure_base() first")
    return value


def move_active(conn: sqlite3.Connection, vid: str, parent: str, guarded: bool,
                action: str = "commit", actor: str | None = None,
                job_id: str | None = None) -> None:
    """Point at ``vid``; when ``guarded``, only if ``parent`` is still active (a rollback made
    while the version was computed is not silently undone). Recorded in the audit trail."""
    if guarded and get_meta(conn, "active") != parent:
        return
    point_active(conn, vid, action, actor, job_id)


def set_active(db: Database, vid: str, actor: str | None = None) -> Version:
    """Make ``vid`` active (rollback or roll forward, as the audit trail records it). Refuses
    unknown versions and any version whose chain contains a failed one: its weights could not
    be rebuilt. Activating a version the quality gate held releases it."""
    with db.write() as conn:
        version = get(conn, vid)
        lineage = chain(conn, vid)
        for link in lineage:
            require_usable(link)
        current = get_meta(conn, "active")
        point_active(conn, vid, _direction(conn, current, vid, lineage), actor)
        if version.held:
            version = _release(conn, version)
        return version


def _direction(conn: sqlite3.Connection, current: str | None, vid: str,
               lineage: list[Version]) -> str:
    """``rollback`` to an ancestor of the active version, ``roll_forward`` to a descendant,
    ``switch`` to another branch."""
    if current is None or current in {v.id for v in lineage}:
        return "roll_forward"
    if vid in {v.id for v in chain(conn, current)}:
        return "rollback"
    return "switch"


def _release(conn: sqlite3.Connection, version: Version) -> Version:
    """An operator activated a version the quality gate held: it is no longer held (its gate
    figures stay, with the time it was released)."""
    diagnostics = dict(version.diagnostics or {})
    diagnostics["gate"] = {**(version.gate or {}), "released_at": now()}
    conn.execute("UPDATE versions SET diagnostics = ? WHERE id = ?",
                  (dumps(diagnostics), version.id))
    return get(conn, version.id)


def mark_failed(db: Database, vid: str, reason: str) -> Version:
    """Quarantine a version (e.g. its delta file is corrupt): it can no longer be made
    active. If it is active, the active pointer falls back to its nearest usable ancestor."""
    with db.write() as conn:
        version = get(conn, vid)
        if version.is_base:
            raise Conflict("the base version cannot be marked failed")
        conn.execute("UPDATE versions SET state = 'failed', error = ? WHERE id = ?", (reason, vid))
        current = get_meta(conn, "active")
        if current is not None:
            lineage = chain(conn, current)
            ids = [v.id for v in lineage]
            if vid in ids:
                usable = lineage[: ids.index(vid)]
                point_active(conn, usable[-1].id if usable else BASE_ID, "quarantine",
                             detail=f"{vid} failed: {reason}"[:500])
        return get(conn, vid)


def set_evaluation(db: Database, vid: str, evaluation: dict) -> Version:
    with db.write() as conn:
        get(conn, vid)
        conn.execute("UPDATE versions SET evaluation = ? WHERE id = ?", (dumps(evaluation), vid))
        return get(conn, vid)
