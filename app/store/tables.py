"""The SQLite schema: the first one (``SCHEMA``, version 1) and the migrations since.

The text of ``SCHEMA`` is what ``app/store.py`` created before the store became a package;
every data directory starts from it (a new one too), then :data:`MIGRATIONS` bring it to
:data:`SCHEMA_VERSION` in place (``PRAGMA user_version`` says where a file stands). So a new
directory and an upgraded one go through the same statements, and
``tests/integration/test_store.py`` checks both. Never edit a migration that has shipped:
add the next one.
"""

from __future__ import annotations

from app.store.records import JOB_STATES, VERSION_KINDS, VERSION_STATES

__all__ = ["BASE_ID", "MIGRATIONS", "SCHEMA", "SCHEMA_VERSION"]

BASE_ID = "v0"
V1_JOB_STATES = ("queued", "running", "committed", "failed")
"""The job states of schema 1, frozen: the CHECK of its jobs table was written from them."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN {V1_JOB_STATES!r}),
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

_JOBS_V2 = f"""
CREATE TABLE jobs_v2 (
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
    updated_at TEXT NOT NULL,
    submitter TEXT,
    cancel_requested_by TEXT,
    cancel_requested_at TEXT
)"""
_V1_JOB_COLUMNS = ("seq, id, idempotency_key, payload, payload_sha256, state, version, error, "
                   "progress, attempts, created_at, updated_at")

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the `cancelled` job state (SQLite cannot alter a CHECK: the jobs table is rebuilt,
    # rows and seq kept), who submitted a job (`created_at` is when) and who asked to cancel
    # it, and the audit table of active-version changes.
    2: (
        _JOBS_V2,
        f"INSERT INTO jobs_v2({_V1_JOB_COLUMNS}) SELECT {_V1_JOB_COLUMNS} FROM jobs",
        "DROP TABLE jobs",
        "ALTER TABLE jobs_v2 RENAME TO jobs",
        "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq)",
        """CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    from_version TEXT,
    to_version TEXT,
    job_id TEXT,
    detail TEXT
)""",
    ),
}
"""Schema version -> the statements that bring the previous version to it, run in one
transaction with foreign keys off (the jobs table is rebuilt under the versions that name it)."""

SCHEMA_VERSION = max(MIGRATIONS)
