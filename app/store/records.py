"""The store's records: jobs and versions as read, a new version as written, and the JSON
helpers that map them to rows. No SQL runs here."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from app.store.payloads import EditJob, EvaluateJob, RevertJob, parse_payload

__all__ = [
    "JOB_STATES",
    "Job",
    "JobState",
    "NewVersion",
    "StoredFile",
    "VERSION_KINDS",
    "VERSION_STATES",
    "Version",
]


class JobState(StrEnum):
    """Where a job stands; the values are what the jobs table and the API hold."""

    queued = "queued"
    running = "running"
    committed = "committed"
    failed = "failed"
    cancelled = "cancelled"


JOB_STATES = tuple(s.value for s in JobState)
"""Plain strings, in this order: the schema's CHECK constraint is written from them."""
VERSION_KINDS = ("base", "edit", "revert")
VERSION_STATES = ("committed", "failed")


@dataclass(frozen=True)
class Job:
    """One accepted request (edit, revert or evaluate) and where it stands."""

    id: str
    seq: int
    state: JobState
    payload: dict[str, Any]
    """As stored (the API's JSON); :attr:`request` is the typed view."""
    idempotency_key: str | None = None
    version: str | None = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    attempts: int = 0
    created_at: str = ""
    """When the job was submitted (and accepted)."""
    updated_at: str = ""
    submitter: str | None = None
    """Who submitted it: a token's name or a short hash of it, never the token (None: made
    before the store recorded submitters)."""
    cancel_requested_by: str | None = None
    """Set while a running job has been asked to stop (and kept once it has)."""
    cancel_requested_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (JobState.committed, JobState.failed, JobState.cancelled)

    @property
    def request(self) -> EditJob | RevertJob | EvaluateJob:
        """The payload parsed into its job type; :class:`app.store.payloads.InvalidPayload` for an
        unknown kind or missing fields."""
        return parse_payload(self.payload)

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

    @property
    def gate(self) -> dict[str, Any] | None:
        """The quality gate's figures and verdict (``app/worker/gate.py``), kept in diagnostics."""
        gate = (self.diagnostics or {}).get("gate")
        return gate if isinstance(gate, dict) else None

    @property
    def held(self) -> bool:
        """Committed, but kept inactive by the quality gate and not activated since by an
        operator (a rollback to it releases it). Its weights are usable like any committed
        version's; only the API reports its state as ``held``."""
        gate = self.gate
        return bool(self.state == "committed" and gate and gate.get("held")
                    and not gate.get("released_at"))

    @property
    def shown_state(self) -> str:
        """The state the API reports: ``held`` for a held version, else the stored one."""
        return "held" if self.held else self.state

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NewVersion:
    """Everything a commit records about a new version except its id and file: built once by
    the commit that owns it, inserted by :func:`app.store.versions.insert`.

    ``job_id`` is set for a job's own version (exactly once per job); ``origin_job`` + ``step``
    for the versions a revert job derives (exactly once per step)."""

    parent: str
    delta_sha256: str
    kind: str = "edit"
    job_id: str | None = None
    origin_job: str | None = None
    step: int | None = None
    method: str | None = None
    hparams: dict[str, Any] | None = None
    facts: list[Any] | None = None
    layer_stats: Any = None
    diagnostics: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    source: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredFile:
    """A delta file written to the data directory, not yet (or already) named by a row."""

    sha256: str
    rel: str
    """Relative to the data directory: ``deltas/<sha256>.safetensors``."""
    size: int


# -- rows -----------------------------------------------------------------------------------
_JSON_JOB = ("payload", "progress")
_JSON_VERSION = (
    "hparams", "facts", "layer_stats", "diagnostics", "timings", "source", "evaluation",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, allow_nan=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def job_from_row(row: sqlite3.Row) -> Job:
    data = {k: row[k] for k in row.keys() if k != "payload_sha256"}
    for key in _JSON_JOB:
        data[key] = loads(data[key])
    data["state"] = JobState(data["state"])
    return Job(**data)


def version_from_row(row: sqlite3.Row) -> Version:
    data = {k: row[k] for k in row.keys()}
    for key in _JSON_VERSION:
        data[key] = loads(data[key])
    return Version(**data)
