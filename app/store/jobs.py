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
from app.store.audit import point_active
from app.store.connection import Database
from app.store.errors import Cancelled, Conflict, NotFound, StoreError
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
    "abandon",
    "cancel",
    "cancel_requested",
    "count_unfinished",
    "create",
    "fail",
    "mark_cancelled",
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
    db: Database, payload: dict[str, Any], idempotency_key: str | None = None,
    submitter: str | None = None,
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
            "attempts, created_at, updated_at, submitter) "
            "VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
            (job_id, idempotency_key, text, digest, stamp, stamp, submitter),
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
        if job.state == JobState.cancelled:
            raise Conflict(f"job {job_id} is cancelled; it cannot fail")
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
        if job.state in (JobState.failed, JobState.cancelled):
            raise Conflict(f"job {job_id} is {job.state} ({job.error}); submit it again")
        if make_active and job.cancel_requested_at is not None:
            raise Cancelled(f"job {job_id} was cancelled by {job.cancel_requested_by}")
        versions.require_usable(version)
        mark_committed(conn, job_id, version_id)
        if make_active:
            action = "revert" if job.payload.get("kind") == "revert" else "commit"
            point_active(conn, version_id, action, job.submitter, job_id)
        return get(conn, job_id)


# -- stopping a job -------------------------------------------------------------------------
def cancel(db: Database, job_id: str, by: str | None) -> Job:
    """Cancel a job: a queued one at once (it never runs), a running one by asking its
    worker to stop at its next check (:func:`cancel_requested`; the worker then marks it
    cancelled, and a commit after the request is refused). Cancelling a cancelled job
    changes nothing; a committed or failed one is a :class:`Conflict`."""
    with db.write() as conn:
        job = get(conn, job_id)
        if job.state == JobState.cancelled:
            return job
        if job.state in (JobState.committed, JobState.failed):
            raise Conflict(f"job {job_id} is already {job.state}; only a queued or running "
                           "job can be cancelled")
        stamp = now()
        if job.state == JobState.queued:
            conn.execute(
                "UPDATE jobs SET state = 'cancelled', error = ?, cancel_requested_by = ?, "
                "cancel_requested_at = ?, updated_at = ? WHERE id = ?",
                (f"cancelled by {by} before it ran", by, stamp, stamp, job_id))
        elif job.cancel_requested_at is None:
            conn.execute(
                "UPDATE jobs SET cancel_requested_by = ?, cancel_requested_at = ?, "
                "updated_at = ? WHERE id = ?", (by, stamp, stamp, job_id))
        return get(conn, job_id)


def cancel_requested(conn: sqlite3.Connection, job_id: str) -> str | None:
    """Who asked to stop this job (None: nobody, or no such job). One indexed read: the
    worker calls it at every step of an edit."""
    row = conn.execute("SELECT cancel_requested_at, cancel_requested_by FROM jobs "
                       "WHERE id = ?", (job_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return row[1] or "an unnamed caller"


def mark_cancelled(db: Database, job_id: str, reason: str) -> Job:
    """The worker stopped a running job it was asked to stop: nothing was committed."""
    with db.write() as conn:
        job = get(conn, job_id)
        if job.state in (JobState.committed, JobState.failed, JobState.cancelled):
            return job
        conn.execute("UPDATE jobs SET state = 'cancelled', error = ?, updated_at = ? "
                     "WHERE id = ?", (reason, now(), job_id))
        return get(conn, job_id)


def abandon(db: Database, job_id: str) -> Job:
    """The worker was told to stop (SIGTERM) mid-job: the job goes back to the queue and the
    attempt it was on is not counted (attempts only count runs a crash ended, so a job that
    keeps killing the worker is still given up, while restarts for a deploy are not)."""
    with db.write() as conn:
        conn.execute(
            "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), progress = NULL, "
            "updated_at = ? WHERE id = ? AND state = 'running'", (now(), job_id))
        return get(conn, job_id)
