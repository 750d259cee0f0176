"""The SQLite schema, kept byte-compatible with every data directory made so far.

The text of ``SCHEMA`` is what ``app/store.py`` created before the store became a package;
``tests/integration/test_store.py`` opens a store made with that text, so any change here is
a migration, not an edit (bump ``SCHEMA_VERSION``).
"""

from __future__ import annotations

from app.store.records import JOB_STATES, VERSION_KINDS, VERSION_STATES

__all__ = ["BASE_ID", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
BASE_ID = "v0"

SCHEMA = f"""
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
