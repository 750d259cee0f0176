"""The jobs table: accepted requests and where they stand.

Functions taking a ``Database`` run their own short transaction; those taking a connection
run inside the caller's (a commit that inserts a version and ends its job in one step).
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterable
from typing import Any

from app.store import versions
from app.store.connection import Database, set_meta
from app.store.errors import Conflict, NotFound, StoreError
from app.store.records import (
    JOB_STATES,
    Job,
    JobState,
    Version,
    dumps,
    job_from_row,
    now,
)

__all__ = [
    "count_unfinished",
    "create",
    "fail",
    "finish",
    "get",
    "list_jobs",
    "mark_committed",
    "mark_running",
    "set_progress",
    "unfinished",
]


def get(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id!r}; list jobs with GET /edits or check the id")
    return job_from_row(row)


def create(
    db: Database, payload: dict[str, Any], idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """Persist an accepted request as a queued job; return ``(job, created)``.

    A known idempotency key returns the existing job and ``False`` (a client retrying a
    request it is unsure about gets the same job). Reusing a key for a *different* payload
    raises :class:`Conflict`: silently answering with the old job would tell the client
    its new facts were accepted when they were not.
    """
    text = dumps(payload)
    digest = hashlib.sha256(text.encode()).hexdigest()
    stamp = now()
    with db.write() as conn:
        if idempotency_key is not None:
            row = conn.execute(
                "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if row is not None:
                if row["payload_sha256"] != digest:
                    raise Conflict(
                        f"idempotency key {idempotency_key!r} was already used for a "
                        f"different request (job {row['id']}); use a new key for new facts"
                    )
                return job_from_row(row), False
        job_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO jobs(id, idempotency_key, payload, payload_sha256, state, "
            "attempts, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', 0, ?, ?)",
            (job_id, idempotency_key, text, digest, stamp, stamp),
        )
        return get(conn, job_id), True


def list_jobs(
    conn: sqlite3.Connection,
    states: Iterable[str] | None = None,
    limit: int = 100,
    *,
    newest_first: bool = True,
) -> list[Job]:
    """Jobs filtered by state, newest first by default (what a status page wants)."""
    sql, args = "SELECT * FROM jobs", []
    if states is not None:
        states = [str(s) for s in states]
        bad = [s for s in states if s not in JOB_STATES]
        if bad:
            raise StoreError(f"unknown job state(s) {bad}; use one of {list(JOB_STATES)}")
        sql += f" WHERE state IN ({','.join('?' * len(states))})"
        args.extend(states)
    sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
    args.append(int(limit))
    return [job_from_row(r) for r in conn.execute(sql, args)]


def unfinished(conn: sqlite3.Connection) -> list[Job]:
    """Queued or running jobs in submission order: the outbox the queue is rebuilt from."""
    rows = conn.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq")
    return [job_from_row(r) for r in rows]


def count_unfinished(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()
    return int(row[0])


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """``{state: jobs in it}`` (states without jobs absent): for /metrics."""
    return {str(state): int(n) for state, n in
            conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}


def mark_running(db: Database, job_id: str) -> Job:
    """Start (or restart after a crash) a job: attempts += 1. A worker can compare
    ``attempts`` with a limit to fail a job that keeps killing it (a poison pill)."""
    with db.write() as conn:
        job = get(conn, job_id)
        if job.finished:
            raise Conflict(f"job {job_id} is already {job.state}; it will not run again")
        conn.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, error = NULL, "
            "updated_at = ? WHERE id = ?",
            (now(), job_id),
        )
        return get(conn, job_id)


def set_progress(db: Database, job_id: str, progress: dict[str, Any]) -> bool:
    """Record progress of an unfinished job; ``False`` (ignored) once it has finished."""
    with db.write() as conn:
        cur = conn.execute(
            "UPDATE jobs SET progress = ?, updated_at = ? "
            "WHERE id = ? AND state IN ('queued', 'running')",
            (dumps(progress), now(), job_id),
        )
        if cur.rowcount == 0:
            get(conn, job_id)  # NotFound for an unknown id
            return False
        return True


def fail(db: Database, job_id: str, error: str) -> Job:
    """Mark a job failed with a reason. A committed job stays committed (Conflict)."""
    with db.write() as conn:
        job = get(conn, job_id)
        if job.state == JobState.committed:
            raise Conflict(f"job {job_id} is committed as {job.version}; it cannot fail")
        conn.execute(
            "UPDATE jobs SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
            (str(error), now(), job_id),
        )
        return get(conn, job_id)


def mark_committed(conn: sqlite3.Connection, job_id: str, version_id: str) -> None:
    """Inside the caller's transaction: the job's result is ``version_id``."""
    conn.execute(
        "UPDATE jobs SET state = 'committed', version = ?, error = NULL, "
        "updated_at = ? WHERE id = ?",
        (version_id, now(), job_id),
    )


def finish(db: Database, job_id: str, version_id: str, *, make_active: bool = True) -> Job:
    """Mark a job committed as an *existing* version (e.g. a revert job whose result is
    the last recomputed version, or its parent when nothing had to be recomputed).
    Idempotent: finishing a job again with the same version changes nothing."""
    with db.write() as conn:
        job = get(conn, job_id)
        version: Version = versions.get(conn, version_id)
        if job.state == JobState.committed:
            if job.version != version_id:
                raise Conflict(f"job {job_id} is already committed as {job.version}")
            return job
        if job.state == JobState.failed:
            raise Conflict(f"job {job_id} has failed ({job.error}); submit it again")
        versions.require_usable(version)
        mark_committed(conn, job_id, version_id)
        if make_active:
            set_meta(conn, "active", version_id)
        return get(conn, job_id)
