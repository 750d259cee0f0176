"""Committing a computed delta as a new version, exactly once.

* **Exactly-once commits.** A job id is UNIQUE in ``versions``: committing a job twice returns
  the version of the first commit and writes nothing, so a queue that delivers a job twice
  (after a crash between commit and acknowledgement) has exactly one effect. Versions a
  revert job derives are unique by ``(origin_job, step)`` the same way.
* **One transaction** inserts the version, ends the job and moves the active pointer, after
  the delta file is written (:meth:`app.store.files.DeltaFiles.transaction`).
"""

from __future__ import annotations

from app.store import jobs, versions
from app.store.connection import Database
from app.store.errors import Cancelled, Conflict
from app.store.files import DeltaFiles
from app.store.records import JobState, NewVersion, Version

__all__ = ["commit_derived", "commit_job"]


def commit_job(
    db: Database,
    files: DeltaFiles,
    new: NewVersion,
    delta_bytes: bytes,
    *,
    make_active: bool = True,
    only_if_parent_active: bool = False,
) -> Version:
    """Commit the result of job ``new.job_id`` as a new version; see
    :meth:`app.store.VersionStore.commit_version`."""
    job_id = str(new.job_id)
    job = jobs.get(db.conn(), job_id)
    if job.state == JobState.committed and job.version is not None:
        return versions.get(db.conn(), job.version)
    if job.state == JobState.failed:
        raise Conflict(f"job {job_id} has failed ({job.error}); it cannot be committed")
    with files.transaction(delta_bytes, f"version for job {job_id}") as (conn, stored):
        job = jobs.get(conn, job_id)
        if job.state == JobState.committed and job.version is not None:
            return versions.get(conn, job.version)  # a racing commit won
        if job.state == JobState.failed:
            raise Conflict(f"job {job_id} has failed; it cannot be committed")
        if job.cancel_requested_at is not None:  # asked while the edit was computed
            raise Cancelled(f"job {job_id} was cancelled by {job.cancel_requested_by}")
        vid = versions.insert(conn, new, stored)
        jobs.mark_committed(conn, job_id, vid)
        if make_active:
            versions.move_active(conn, vid, new.parent, guarded=only_if_parent_active,
                                 actor=job.submitter, job_id=job_id)
        return versions.get(conn, vid)


def commit_derived(
    db: Database,
    files: DeltaFiles,
    new: NewVersion,
    delta_bytes: bytes,
    *,
    make_active: bool = False,
) -> Version:
    """Commit a version no edit job owns; see
    :meth:`app.store.VersionStore.commit_derived_version`."""
    if new.origin_job is not None:
        done = versions.find_step(db.conn(), new.origin_job, new.step)
        if done is not None:
            return done
    with files.transaction(delta_bytes, f"a derived version of {new.parent}") as (conn, stored):
        if new.origin_job is not None:
            jobs.get(conn, new.origin_job)  # NotFound for an unknown job
            done = versions.find_step(conn, new.origin_job, new.step)
            if done is not None:
                return done
        vid = versions.insert(conn, new, stored)
        if make_active:
            versions.move_active(conn, vid, new.parent, guarded=False, action="revert",
                                 job_id=new.origin_job)
        return versions.get(conn, vid)
