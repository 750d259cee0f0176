"""The version store: SQLite is the source of truth for jobs and versions; deltas are files.

:class:`VersionStore` is the one object callers hold; each responsibility lives in its own
module and the store only opens the right transaction and delegates:

* :mod:`app.store.connection`: a SQLite connection per thread (WAL), transactions, the file
  lock that keeps a starting process's cleanup away from another's in-flight commit;
* :mod:`app.store.files`: content-addressed delta files, written *before* the rows that name
  them, verified on read, crash leftovers removed at start;
* :mod:`app.store.jobs`: the jobs table; :mod:`app.store.versions`: versions, lineage and the
  active pointer; :mod:`app.store.commits`: exactly-once commits spanning all three;
* :mod:`app.store.audit`: the trail of active-version changes, written in the transaction
  that moves the pointer;
* :mod:`app.store.records`: ``Job``, ``Version``, ``NewVersion``, ``JobState``;
  :mod:`app.store.tables`: the SQL and its migrations (an older data directory is upgraded
  in place when opened).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.store import audit, commits, jobs, versions
from app.store.audit import AuditEntry
from app.store.connection import Database
from app.store.errors import (
    Cancelled,
    Conflict,
    CorruptDelta,
    NotFound,
    StoreError,
    StoreWriteError,
)
from app.store.files import DeltaFiles
from app.store.records import JOB_STATES, Job, JobState, NewVersion, Version

__all__ = [
    "AuditEntry",
    "Cancelled",
    "Conflict",
    "CorruptDelta",
    "Job",
    "JOB_STATES",
    "JobState",
    "NewVersion",
    "NotFound",
    "StoreError",
    "StoreWriteError",
    "Version",
    "VersionStore",
]


class VersionStore:
    """Jobs, versions and the active-version pointer of one data directory.

    Thread-safe (a connection per thread) and multi-process safe (SQLite locking). Construct one
    per process; constructing it creates the schema and removes crash leftovers.
    """

    DB_NAME = "store.sqlite3"
    DELTA_DIR = DeltaFiles.DIR
    BUSY_TIMEOUT_MS = Database.BUSY_TIMEOUT_MS

    def __init__(self, data_dir: str | os.PathLike[str], *, clean: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.deltas_dir = self.data_dir / self.DELTA_DIR
        self.db_path = self.data_dir / self.DB_NAME
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.deltas_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot create the data directory {self.data_dir}: {exc}; "
                "choose a writable --data-dir / MODELEDIT_DATA_DIR"
            ) from exc
        self.db = Database(self.db_path, self.data_dir)
        self.files = DeltaFiles(self.data_dir, self.db)
        self.db.init_schema()
        if clean:
            self.clean_leftovers()

    def close(self) -> None:
        """Close every connection this store opened (any thread)."""
        self.db.close()

    def __enter__(self) -> VersionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clean_leftovers(self) -> dict[str, int]:
        """Remove crash leftovers (see :meth:`app.store.files.DeltaFiles.clean_leftovers`)."""
        return self.files.clean_leftovers()

    # -- jobs -------------------------------------------------------------------------------
    def create_job(
        self, payload: dict[str, Any], idempotency_key: str | None = None,
        submitter: str | None = None,
    ) -> tuple[Job, bool]:
        """Persist an accepted request as a queued job; ``(job, created)``. A known
        idempotency key returns its job (:class:`Conflict` if the payload differs).
        ``submitter`` is a name for the caller, never a token."""
        return jobs.create(self.db, payload, idempotency_key, submitter)

    def get_job(self, job_id: str) -> Job:
        return jobs.get(self.db.conn(), job_id)

    def list_jobs(
        self,
        states: Iterable[str] | None = None,
        limit: int = 100,
        *,
        newest_first: bool = True,
    ) -> list[Job]:
        """Jobs filtered by state, newest first by default (what a status page wants)."""
        return jobs.list_jobs(self.db.conn(), states, limit, newest_first=newest_first)

    def unfinished_jobs(self) -> list[Job]:
        """Queued or running jobs in submission order: the outbox the queue is rebuilt from."""
        return jobs.unfinished(self.db.conn())

    def count_unfinished(self) -> int:
        return jobs.count_unfinished(self.db.conn())

    def count_jobs_by_state(self) -> dict[str, int]:
        return jobs.count_by_state(self.db.conn())

    def mark_running(self, job_id: str) -> Job:
        """Start (or restart after a crash) a job: attempts += 1."""
        return jobs.mark_running(self.db, job_id)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> bool:
        """Record progress of an unfinished job; ``False`` (ignored) once it has finished."""
        return jobs.set_progress(self.db, job_id, progress)

    def fail_job(self, job_id: str, error: str) -> Job:
        """Mark a job failed with a reason. A committed job stays committed (Conflict)."""
        return jobs.fail(self.db, job_id, error)

    def cancel_job(self, job_id: str, by: str | None) -> Job:
        """Cancel a queued job now, or ask a running one to stop (:func:`app.store.jobs.cancel`)."""
        return jobs.cancel(self.db, job_id, by)

    def cancel_requested(self, job_id: str) -> str | None:
        """Who asked this job to stop, or None; cheap enough for every step of an edit."""
        return jobs.cancel_requested(self.db.conn(), job_id)

    def mark_cancelled(self, job_id: str, reason: str) -> Job:
        return jobs.mark_cancelled(self.db, job_id, reason)

    def abandon_job(self, job_id: str) -> Job:
        """Back to the queue after a SIGTERM, the attempt not counted."""
        return jobs.abandon(self.db, job_id)

    def finish_job(self, job_id: str, version_id: str, *, make_active: bool = True) -> Job:
        """Mark a job committed as an *existing* version; idempotent."""
        return jobs.finish(self.db, job_id, version_id, make_active=make_active)

    # -- commits ----------------------------------------------------------------------------
    def commit_version(
        self,
        job_id: str,
        parent: str,
        delta_bytes: bytes,
        delta_sha256: str,
        *,
        method: str | None = None,
        hparams: dict[str, Any] | None = None,
        facts: list[Any] | None = None,
        layer_stats: Any = None,
        diagnostics: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        kind: str = "edit",
        make_active: bool = True,
        only_if_parent_active: bool = False,
    ) -> Version:
        """Commit the result of a job as a new version, exactly once.

        If the job is already committed its existing version is returned and nothing is
        written. Otherwise the delta file is written first, then ONE transaction inserts the
        version, marks the job committed and (``make_active``) moves the active pointer. With
        ``only_if_parent_active`` the pointer moves only if ``parent`` is still active, so a
        rollback made while the edit was computed is not silently undone (the version is
        committed either way). Any failure raises :class:`StoreWriteError` (or
        :class:`NotFound`/:class:`Conflict`) and leaves the database unchanged.
        """
        new = NewVersion(
            parent=parent, delta_sha256=delta_sha256, kind=kind, job_id=job_id,
            origin_job=job_id, method=method, hparams=hparams, facts=facts,
            layer_stats=layer_stats, diagnostics=diagnostics, timings=timings,
        )
        return commits.commit_job(
            self.db, self.files, new, delta_bytes,
            make_active=make_active, only_if_parent_active=only_if_parent_active,
        )

    def commit_derived_version(
        self,
        parent: str,
        delta_bytes: bytes,
        delta_sha256: str,
        *,
        origin_job: str | None = None,
        step: int = 0,
        kind: str = "revert",
        method: str | None = None,
        hparams: dict[str, Any] | None = None,
        facts: list[Any] | None = None,
        layer_stats: Any = None,
        diagnostics: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        make_active: bool = False,
    ) -> Version:
        """Commit a version that no edit job owns, e.g. a batch recomputed by a revert.

        A revert job may produce several versions; each is idempotent by
        ``(origin_job, step)``, so a revert job retried after a crash resumes instead of
        committing its steps twice. Finish the job with :meth:`finish_job`.
        """
        new = NewVersion(
            parent=parent, delta_sha256=delta_sha256, kind=kind, origin_job=origin_job,
            step=step, method=method, hparams=hparams, facts=facts, layer_stats=layer_stats,
            diagnostics=diagnostics, timings=timings, source=source,
        )
        return commits.commit_derived(self.db, self.files, new, delta_bytes,
                                      make_active=make_active)

    # -- versions ---------------------------------------------------------------------------
    def ensure_base(self, model_name: str, fingerprint: str) -> Version:
        """Create the base version ``v0`` once; refuse a data dir made for another model."""
        return versions.ensure_base(self.db, self.data_dir, model_name, fingerprint)

    def get_version(self, vid: str) -> Version:
        return versions.get(self.db.conn(), vid)

    def list_versions(self) -> list[Version]:
        """All versions in creation order (the base first)."""
        return versions.list_versions(self.db.conn())

    def active_version(self) -> str:
        """The active version id; :class:`StoreError` before :meth:`ensure_base`."""
        return versions.active(self.db.conn())

    def set_active(self, vid: str, actor: str | None = None) -> Version:
        """Make ``vid`` active (rollback); refuses a version whose chain has a failed one.
        The audit trail records ``actor`` (a name, never a token)."""
        return versions.set_active(self.db, vid, actor)

    def audit(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Changes of the active version, newest first (``before``: a ``seq`` to page back)."""
        return audit.list_entries(self.db.conn(), limit, before)

    def mark_version_failed(self, vid: str, reason: str) -> Version:
        """Quarantine a version; an active pointer on it falls back to a usable ancestor."""
        return versions.mark_failed(self.db, vid, reason)

    def chain(self, vid: str) -> list[Version]:
        """The lineage of ``vid``: the base first, then each descendant down to ``vid``.
        Applying the deltas of this list in order gives the weights of ``vid``."""
        with self.db.read() as conn:
            return versions.chain(conn, vid)

    def set_evaluation(self, vid: str, evaluation: dict[str, Any]) -> Version:
        return versions.set_evaluation(self.db, vid, evaluation)

    # -- delta files ------------------------------------------------------------------------
    def delta_file(self, version: Version | str) -> Path:
        """The absolute path of a version's delta file."""
        return self.files.path(self._resolve(version))

    def read_delta(self, version: Version | str) -> bytes:
        """The delta bytes, verified against the recorded sha256 (:class:`CorruptDelta`)."""
        return self.files.read(self._resolve(version))

    def _resolve(self, version: Version | str) -> Version:
        return self.get_version(version) if isinstance(version, str) else version
