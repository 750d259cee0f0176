"""The version store: SQLite is the source of truth for jobs and versions; deltas are files.

Why it is built this way:

* **Crash safety by ordering.** A delta file is written (temp file, fsync, rename) *before* the
  SQLite transaction that references it. A crash can therefore leave only an unreferenced file
  (or a temp file), never a version row without its file; both leftovers are removed at start.
* **Exactly-once commits.** A job id is UNIQUE in ``versions``: committing a job twice returns
  the version of the first commit and writes nothing, so a queue that delivers a job twice
  (after a crash between commit and acknowledgement) has exactly one effect.
* **Several threads and processes.** Each thread gets its own connection (WAL: readers never
  block the writer); writes use ``BEGIN IMMEDIATE`` and a busy timeout, so API processes and
  the worker can share the file. A file lock keeps the leftover cleanup of a starting process
  away from another process's in-flight commit.
* **Content-addressed deltas.** Files are named by the sha256 of their bytes, which makes the
  name a checksum: :meth:`VersionStore.read_delta` refuses a file whose bytes changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "Conflict",
    "CorruptDelta",
    "Job",
    "JOB_STATES",
    "NotFound",
    "StoreError",
    "StoreWriteError",
    "Version",
    "VersionStore",
]

JOB_STATES = ("queued", "running", "committed", "failed")
UNFINISHED = ("queued", "running")
VERSION_KINDS = ("base", "edit", "revert")
VERSION_STATES = ("committed", "failed")
SCHEMA_VERSION = 1
BASE_ID = "v0"


# -- errors ---------------------------------------------------------------------------------
class StoreError(RuntimeError):
    """Base class: the store refused an operation; the message says what to fix."""


class NotFound(StoreError, KeyError):
    """An unknown job or version id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Conflict(StoreError):
    """The request contradicts the current state (e.g. activating a failed version)."""


class StoreWriteError(StoreError):
    """A commit could not be written (disk full, unwritable directory); nothing changed."""


class CorruptDelta(StoreError):
    """A delta file is missing or its bytes do not match the recorded sha256."""


# -- records --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One accepted edit request (a batch of facts) and where it stands."""

    id: str
    seq: int
    state: str
    payload: dict[str, Any]
    idempotency_key: str | None = None
    version: str | None = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("committed", "failed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Version:
    """A committed state of the model: its parent plus one delta (none for the base)."""

    id: str
    seq: int
    parent: str | None
    kind: str
    state: str = "committed"
    job_id: str | None = None
    origin_job: str | None = None
    step: int | None = None
    file_sha256: str | None = None
    delta_sha256: str | None = None
    delta_path: str | None = None
    """Relative to the data directory, so the directory can be moved."""
    size_bytes: int | None = None
    model_name: str | None = None
    fingerprint: str | None = None
    method: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    facts: list[Any] = field(default_factory=list)
    layer_stats: Any = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    """Provenance of derived versions, e.g. ``{"reverted": "v2", "replays": "v3"}``."""
    evaluation: dict[str, Any] | None = None
    error: str | None = None
    created_at: str = ""

    @property
    def is_base(self) -> bool:
        return self.kind == "base"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- schema ---------------------------------------------------------------------------------
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN {JOB_STATES!r}),
    version TEXT REFERENCES versions(id),
    error TEXT,
    progress TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    parent TEXT REFERENCES versions(id),
    job_id TEXT UNIQUE REFERENCES jobs(id),
    origin_job TEXT,
    step INTEGER,
    state TEXT NOT NULL CHECK (state IN {VERSION_STATES!r}),
    kind TEXT NOT NULL CHECK (kind IN {VERSION_KINDS!r}),
    file_sha256 TEXT,
    delta_sha256 TEXT,
    delta_path TEXT,
    size_bytes INTEGER,
    model_name TEXT,
    fingerprint TEXT,
    method TEXT,
    hparams TEXT NOT NULL DEFAULT '{{}}',
    facts TEXT NOT NULL DEFAULT '[]',
    layer_stats TEXT NOT NULL DEFAULT 'null',
    diagnostics TEXT NOT NULL DEFAULT '{{}}',
    timings TEXT NOT NULL DEFAULT '{{}}',
    source TEXT,
    evaluation TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (origin_job, step),
    CHECK ((kind = 'base') = (parent IS NULL)),
    CHECK (kind = 'base' OR delta_path IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_JSON_JOB = ("payload", "progress")
_JSON_VERSION = ("hparams", "facts", "layer_stats", "diagnostics", "timings", "source", "evaluation")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class VersionStore:
    """Jobs, versions and the active-version pointer of one data directory.

    Thread-safe (a connection per thread) and multi-process safe (SQLite locking). Construct one
    per process; constructing it creates the schema and removes crash leftovers.
    """

    DB_NAME = "store.sqlite3"
    DELTA_DIR = "deltas"
    BUSY_TIMEOUT_MS = 30_000

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
        self._local = threading.local()
        self._pid = os.getpid()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._init_schema()
        if clean:
            self.clean_leftovers()

    # -- connections and transactions ---------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own: sharing one is unsafe)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.db_path,
                timeout=self.BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # only so close() may close it from another thread
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self.BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; BEGIN IMMEDIATE takes the write lock up front, so two
        writers never both read-then-write on stale data (no SQLITE_BUSY mid-transaction).
        SQLite failures (disk full, read-only file, locked too long) become
        :class:`StoreWriteError`, after a rollback: the database is unchanged."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._write_error(exc) from exc
            raise

    def _write_error(self, exc: sqlite3.Error) -> StoreWriteError:
        return StoreWriteError(
            f"the store {self.db_path} could not be written ({exc}); free disk space or make "
            "the data directory writable, then retry"
        )

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(
                    f"SQLite refused WAL mode ({mode}) for {self.db_path}; "
                    "put the data directory on a local filesystem"
                )
            with self._write() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.db_path} has schema {found}, newer than this code "
                        f"({SCHEMA_VERSION}); upgrade the service"
                    )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreWriteError(f"cannot open the store {self.db_path}: {exc}") from exc

    def close(self) -> None:
        """Close every connection this store opened (any thread)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def __enter__(self) -> VersionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- file locking against cleanup ---------------------------------------------------
    @contextlib.contextmanager
    def _file_lock(self, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
        """A shared lock while committing, an exclusive one while cleaning: a process that
        starts must not delete the file another process has written but not yet recorded."""
        path = self.data_dir / ".store.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot open {path}: {exc.strerror or exc}; make the data directory writable"
            ) from exc
        try:
            flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, flags | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # also releases the lock

    def clean_leftovers(self) -> dict[str, int]:
        """Remove temp files and delta files no version references (crash leftovers).

        Skipped (returns zeros) while another process is committing; it runs again at the
        next start. Returns how many files of each kind were removed.
        """
        removed = {"temp": 0, "orphan": 0}
        try:
            with self._file_lock(exclusive=True, blocking=False) as got:
                if got and self.deltas_dir.is_dir():
                    self._clean_locked(removed)
        except StoreWriteError:
            pass  # a read-only data directory has nothing we could clean anyway
        return removed

    def _clean_locked(self, removed: dict[str, int]) -> None:
        """Remove leftovers; the caller holds the exclusive file lock."""
        with self._read() as conn:
            referenced = {
                row[0]
                for row in conn.execute(
                    "SELECT delta_path FROM versions WHERE delta_path IS NOT NULL"
                )
            }
        for path in self.deltas_dir.iterdir():
            rel = f"{self.DELTA_DIR}/{path.name}"
            if path.name.endswith(".tmp"):
                kind = "temp"
            elif path.suffix == ".safetensors" and rel not in referenced:
                kind = "orphan"
            else:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed[kind] += 1

    # -- meta ---------------------------------------------------------------------------
    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- row conversion -----------------------------------------------------------------
    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        data = {k: row[k] for k in row.keys() if k != "payload_sha256"}
        for key in _JSON_JOB:
            data[key] = _loads(data[key])
        return Job(**data)

    @staticmethod
    def _version(row: sqlite3.Row) -> Version:
        data = {k: row[k] for k in row.keys()}
        for key in _JSON_VERSION:
            data[key] = _loads(data[key])
        return Version(**data)

    def _get_job(self, conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r}; list jobs with GET /edits or check the id")
        return self._job(row)

    def _get_version(self, conn: sqlite3.Connection, vid: str) -> Version:
        row = conn.execute("SELECT * FROM versions WHERE id = ?", (vid,)).fetchone()
        if row is None:
            raise NotFound(f"no version {vid!r}; list versions with GET /versions")
        return self._version(row)

    # -- base ---------------------------------------------------------------------------
    def ensure_base(self, model_name: str, fingerprint: str) -> Version:
        """Create the base version ``v0`` once; refuse a data dir made for another model."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM versions WHERE kind = 'base'").fetchone()
            if row is not None:
                base = self._version(row)
                if base.fingerprint != fingerprint:
                    raise StoreError(
                        f"the data directory {self.data_dir} belongs to another model "
                        f"({base.model_name!r}, fingerprint {str(base.fingerprint)[:12]}…), "
                        f"not {model_name!r} ({fingerprint[:12]}…); use another --data-dir "
                        "or the model it was made for (in the dtype it was made with: "
                        "MODELEDIT_DTYPE changes the fingerprint)"
                    )
            else:
                conn.execute(
                    "INSERT INTO versions(id, parent, state, kind, model_name, fingerprint, "
                    "method, created_at) VALUES (?, NULL, 'committed', 'base', ?, ?, 'base', ?)",
                    (BASE_ID, model_name, fingerprint, _now()),
                )
                base = self._get_version(conn, BASE_ID)
            if self._meta(conn, "active") is None:
                self._set_meta(conn, "active", base.id)
            return base

    # -- jobs ---------------------------------------------------------------------------
    def create_job(
        self, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Persist an accepted request as a queued job; return ``(job, created)``.

        A known idempotency key returns the existing job and ``False`` (a client retrying a
        request it is unsure about gets the same job). Reusing a key for a *different* payload
        raises :class:`Conflict`: silently answering with the old job would tell the client
        its new facts were accepted when they were not.
        """
        text = _dumps(payload)
        digest = hashlib.sha256(text.encode()).hexdigest()
        now = _now()
        with self._write() as conn:
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
                    return self._job(row), False
            job_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO jobs(id, idempotency_key, payload, payload_sha256, state, "
                "attempts, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', 0, ?, ?)",
                (job_id, idempotency_key, text, digest, now, now),
            )
            return self._get_job(conn, job_id), True

    def get_job(self, job_id: str) -> Job:
        return self._get_job(self._conn(), job_id)

    def list_jobs(
        self,
        states: Iterable[str] | None = None,
        limit: int = 100,
        *,
        newest_first: bool = True,
    ) -> list[Job]:
        """Jobs filtered by state, newest first by default (what a status page wants)."""
        sql, args = "SELECT * FROM jobs", []
        if states is not None:
            states = list(states)
            bad = [s for s in states if s not in JOB_STATES]
            if bad:
                raise StoreError(f"unknown job state(s) {bad}; use one of {list(JOB_STATES)}")
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args.extend(states)
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(int(limit))
        return [self._job(r) for r in self._conn().execute(sql, args)]

    def unfinished_jobs(self) -> list[Job]:
        """Queued or running jobs in submission order: the outbox the queue is rebuilt from."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq"
        )
        return [self._job(r) for r in rows]

    def count_unfinished(self) -> int:
        row = self._conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
        ).fetchone()
        return int(row[0])

    def mark_running(self, job_id: str) -> Job:
        """Start (or restart after a crash) a job: attempts += 1. A worker can compare
        ``attempts`` with a limit to fail a job that keeps killing it (a poison pill)."""
        with self._write() as conn:
            job = self._get_job(conn, job_id)
            if job.finished:
                raise Conflict(f"job {job_id} is already {job.state}; it will not run again")
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, error = NULL, "
                "updated_at = ? WHERE id = ?",
                (_now(), job_id),
            )
            return self._get_job(conn, job_id)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> bool:
        """Record progress of an unfinished job; ``False`` (ignored) once it has finished."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (_dumps(progress), _now(), job_id),
            )
            if cur.rowcount == 0:
                self._get_job(conn, job_id)  # NotFound for an unknown id
                return False
            return True

    def fail_job(self, job_id: str, error: str) -> Job:
        """Mark a job failed with a reason. A committed job stays committed (Conflict)."""
        with self._write() as conn:
            job = self._get_job(conn, job_id)
            if job.state == "committed":
                raise Conflict(f"job {job_id} is committed as {job.version}; it cannot fail")
            conn.execute(
                "UPDATE jobs SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                (str(error), _now(), job_id),
            )
            return self._get_job(conn, job_id)

    def finish_job(self, job_id: str, version_id: str, *, make_active: bool = True) -> Job:
        """Mark a job committed as an *existing* version (e.g. a revert job whose result is
        the last recomputed version, or its parent when nothing had to be recomputed).
        Idempotent: finishing a job again with the same version changes nothing."""
        with self._write() as conn:
            job = self._get_job(conn, job_id)
            version = self._get_version(conn, version_id)
            if job.state == "committed":
                if job.version != version_id:
                    raise Conflict(f"job {job_id} is already committed as {job.version}")
                return job
            if job.state == "failed":
                raise Conflict(f"job {job_id} has failed ({job.error}); submit it again")
            self._require_usable(conn, version)
            conn.execute(
                "UPDATE jobs SET state = 'committed', version = ?, error = NULL, "
                "updated_at = ? WHERE id = ?",
                (version_id, _now(), job_id),
            )
            if make_active:
                self._set_meta(conn, "active", version_id)
            return self._get_job(conn, job_id)

    # -- versions -----------------------------------------------------------------------
    def _write_delta(self, delta_bytes: bytes) -> tuple[str, str]:
        """Write the delta file (if not already there); return (file sha256, relative path)."""
        file_sha = hashlib.sha256(delta_bytes).hexdigest()
        rel = f"{self.DELTA_DIR}/{file_sha}.safetensors"
        path = self.data_dir / rel
        from models.files import atomic_write  # no torch (unlike anything under editing/)

        try:
            if path.is_file() and _file_sha256(path) == file_sha:
                return file_sha, rel  # same content already stored (content addressing)
            atomic_write(path, delta_bytes)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot write the delta file in {self.deltas_dir}: {exc.strerror or exc}; "
                "free disk space or make the data directory writable, then submit again"
            ) from exc
        return file_sha, rel

    def _discard_file(self, rel: str) -> None:
        """Remove a file written for a commit that did not happen, unless a version uses it."""
        with contextlib.suppress(sqlite3.Error, OSError):
            row = self._conn().execute(
                "SELECT 1 FROM versions WHERE delta_path = ? LIMIT 1", (rel,)
            ).fetchone()
            if row is None:
                (self.data_dir / rel).unlink(missing_ok=True)

    def _require_usable(self, conn: sqlite3.Connection, version: Version) -> None:
        if version.state != "committed":
            raise Conflict(
                f"version {version.id} is {version.state}"
                + (f" ({version.error})" if version.error else "")
                + "; choose a committed version (GET /versions)"
            )

    def _insert_version(
        self,
        conn: sqlite3.Connection,
        *,
        parent: str,
        job_id: str | None,
        origin_job: str | None,
        step: int | None,
        kind: str,
        file_sha: str,
        rel: str,
        size: int,
        delta_sha256: str,
        method: str | None,
        hparams: Any,
        facts: Any,
        layer_stats: Any,
        diagnostics: Any,
        timings: Any,
        source: Any,
    ) -> str:
        if kind not in VERSION_KINDS or kind == "base":
            raise StoreError(f"kind must be one of {VERSION_KINDS[1:]}, not {kind!r}")
        parent_version = self._get_version(conn, parent)
        self._require_usable(conn, parent_version)
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
                parent,
                job_id,
                origin_job,
                step,
                kind,
                file_sha,
                delta_sha256,
                rel,
                size,
                parent_version.model_name,
                parent_version.fingerprint,
                method,
                _dumps(hparams or {}),
                _dumps(facts or []),
                _dumps(layer_stats),
                _dumps(diagnostics or {}),
                _dumps(timings or {}),
                None if source is None else _dumps(source),
                _now(),
            ),
        )
        return vid

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
        job = self.get_job(job_id)
        if job.state == "committed" and job.version is not None:
            return self.get_version(job.version)
        if job.state == "failed":
            raise Conflict(f"job {job_id} has failed ({job.error}); it cannot be committed")
        what = f"version for job {job_id}"
        with self._delta_transaction(delta_bytes, what) as (conn, file_sha, rel):
            job = self._get_job(conn, job_id)
            if job.state == "committed" and job.version is not None:
                return self._get_version(conn, job.version)  # a racing commit won
            if job.state == "failed":
                raise Conflict(f"job {job_id} has failed; it cannot be committed")
            vid = self._insert_version(
                conn,
                parent=parent,
                job_id=job_id,
                origin_job=job_id,
                step=None,
                kind=kind,
                file_sha=file_sha,
                rel=rel,
                size=len(delta_bytes),
                delta_sha256=delta_sha256,
                method=method,
                hparams=hparams,
                facts=facts,
                layer_stats=layer_stats,
                diagnostics=diagnostics,
                timings=timings,
                source=None,
            )
            conn.execute(
                "UPDATE jobs SET state = 'committed', version = ?, error = NULL, "
                "updated_at = ? WHERE id = ?",
                (vid, _now(), job_id),
            )
            self._move_active(conn, vid, parent, make_active, only_if_parent_active)
            return self._get_version(conn, vid)

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
        if origin_job is not None:
            row = self._conn().execute(
                "SELECT * FROM versions WHERE origin_job = ? AND step = ?", (origin_job, step)
            ).fetchone()
            if row is not None:
                return self._version(row)
        what = f"a derived version of {parent}"
        with self._delta_transaction(delta_bytes, what) as (conn, file_sha, rel):
            if origin_job is not None:
                self._get_job(conn, origin_job)  # NotFound for an unknown job
                row = conn.execute(
                    "SELECT * FROM versions WHERE origin_job = ? AND step = ?",
                    (origin_job, step),
                ).fetchone()
                if row is not None:
                    return self._version(row)
            vid = self._insert_version(
                conn,
                parent=parent,
                job_id=None,
                origin_job=origin_job,
                step=step,
                kind=kind,
                file_sha=file_sha,
                rel=rel,
                size=len(delta_bytes),
                delta_sha256=delta_sha256,
                method=method,
                hparams=hparams,
                facts=facts,
                layer_stats=layer_stats,
                diagnostics=diagnostics,
                timings=timings,
                source=source,
            )
            self._move_active(conn, vid, parent, make_active, False)
            return self._get_version(conn, vid)

    @contextlib.contextmanager
    def _delta_transaction(
        self, delta_bytes: bytes, what: str
    ) -> Iterator[tuple[sqlite3.Connection, str, str]]:
        """Write the delta file first, then open ONE write transaction for the rows that name it.

        Yields ``(conn, file_sha, rel)``. If anything inside fails, the transaction rolls back
        and the file is discarded, so no version row points at a missing file and no file is
        left that no row names; a SQLite failure becomes a :class:`StoreWriteError` that says
        what to fix.
        """
        with self._file_lock(exclusive=False):
            file_sha, rel = self._write_delta(delta_bytes)
            try:
                with self._write() as conn:
                    yield conn, file_sha, rel
            except StoreError:
                self._discard_file(rel)
                raise
            except sqlite3.Error as exc:
                self._discard_file(rel)
                raise StoreWriteError(
                    f"cannot record {what}: {exc}; free disk space or make the data directory "
                    "writable, then retry"
                ) from exc

    def _move_active(
        self, conn: sqlite3.Connection, vid: str, parent: str, make_active: bool, guarded: bool
    ) -> None:
        if not make_active:
            return
        if guarded and self._meta(conn, "active") != parent:
            return
        self._set_meta(conn, "active", vid)

    def get_version(self, vid: str) -> Version:
        return self._get_version(self._conn(), vid)

    def list_versions(self) -> list[Version]:
        """All versions in creation order (the base first)."""
        rows = self._conn().execute("SELECT * FROM versions ORDER BY seq")
        return [self._version(r) for r in rows]

    def active_version(self) -> str:
        """The active version id; :class:`StoreError` before :meth:`ensure_base`."""
        value = self._meta(self._conn(), "active")
        if value is None:
            raise StoreError("the store has no active version yet; call ensure_base() first")
        return value

    def set_active(self, vid: str) -> Version:
        """Make ``vid`` active (rollback). Refuses unknown versions and any version whose
        chain contains a failed one: its weights could not be rebuilt."""
        with self._write() as conn:
            version = self._get_version(conn, vid)
            for link in self._chain(conn, vid):
                self._require_usable(conn, link)
            self._set_meta(conn, "active", vid)
            return version

    def mark_version_failed(self, vid: str, reason: str) -> Version:
        """Quarantine a version (e.g. its delta file is corrupt): it can no longer be made
        active. If it is active, the active pointer falls back to its nearest usable ancestor.
        """
        with self._write() as conn:
            version = self._get_version(conn, vid)
            if version.is_base:
                raise Conflict("the base version cannot be marked failed")
            conn.execute(
                "UPDATE versions SET state = 'failed', error = ? WHERE id = ?", (reason, vid)
            )
            active = self._meta(conn, "active")
            if active is not None:
                chain = self._chain(conn, active)
                ids = [v.id for v in chain]
                if vid in ids:
                    usable = chain[: ids.index(vid)]
                    self._set_meta(conn, "active", usable[-1].id if usable else BASE_ID)
            return self._get_version(conn, vid)

    def _chain(self, conn: sqlite3.Connection, vid: str) -> list[Version]:
        chain: list[Version] = []
        seen: set[str] = set()
        current: str | None = vid
        while current is not None:
            if current in seen:  # cannot happen through this API; guards a hand-edited DB
                raise StoreError(f"version lineage of {vid} has a cycle at {current}")
            seen.add(current)
            version = self._get_version(conn, current)
            chain.append(version)
            current = version.parent
        chain.reverse()
        return chain

    def chain(self, vid: str) -> list[Version]:
        """The lineage of ``vid``: the base first, then each descendant down to ``vid``.
        Applying the deltas of this list in order gives the weights of ``vid``."""
        with self._read() as conn:
            return self._chain(conn, vid)

    def delta_file(self, version: Version | str) -> Path:
        """The absolute path of a version's delta file."""
        if isinstance(version, str):
            version = self.get_version(version)
        if version.delta_path is None:
            raise StoreError(f"version {version.id} is the base model; it has no delta")
        return self.data_dir / version.delta_path

    def read_delta(self, version: Version | str) -> bytes:
        """The delta bytes, verified against the recorded sha256 (:class:`CorruptDelta`)."""
        if isinstance(version, str):
            version = self.get_version(version)
        path = self.delta_file(version)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CorruptDelta(
                f"the delta file of version {version.id} is missing ({path}); restore it "
                "from a backup or roll back to a version before it"
            ) from exc
        except OSError as exc:
            raise CorruptDelta(f"cannot read the delta of version {version.id}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != version.file_sha256:
            raise CorruptDelta(
                f"the delta file of version {version.id} is corrupt: sha256 {actual[:12]}… "
                f"!= recorded {str(version.file_sha256)[:12]}…; it was not applied. Restore "
                "the file from a backup or roll back to a version before it"
            )
        return data

    def set_evaluation(self, vid: str, evaluation: dict[str, Any]) -> Version:
        with self._write() as conn:
            self._get_version(conn, vid)
            conn.execute(
                "UPDATE versions SET evaluation = ? WHERE id = ?", (_dumps(evaluation), vid)
            )
            return self._get_version(conn, vid)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
