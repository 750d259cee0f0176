"""The store's first migration (schema 2): the `cancelled` job state, who submitted a job, and
the audit trail of the active version, on a new data directory and on one made before."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from app.store import Cancelled, Conflict, StoreError, VersionStore
from app.store.records import JobState
from app.store.tables import SCHEMA_VERSION
from tests.integration.test_store import FP, MAIN_SCHEMA, commit, make_delta

STAMP = "2026-01-01T00:00:00.000Z"


def old_store(path: Path) -> bytes:
    """A data directory as schema 1 left it: v0 <- v1 (active), a committed job with two
    attempts, a queued revert job and a failed one. Returns v1's delta bytes."""
    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / VersionStore.DB_NAME)
    conn.executescript(MAIN_SCHEMA + "PRAGMA user_version = 1; PRAGMA journal_mode = WAL;")
    (path / "deltas").mkdir()
    data, sha = make_delta()
    file_sha = hashlib.sha256(data).hexdigest()
    (path / "deltas" / f"{file_sha}.safetensors").write_bytes(data)
    conn.executescript(f"""
        INSERT INTO versions(id, parent, state, kind, model_name, fingerprint, method, created_at)
            VALUES ('v0', NULL, 'committed', 'base', 'tiny', '{FP}', 'base', '{STAMP}');
        INSERT INTO jobs(id, idempotency_key, payload, payload_sha256, state, version, attempts,
            progress, created_at, updated_at) VALUES ('j1', 'k1', '{{"facts": [], "method":
            "fe"}}', 'x', 'committed', NULL, 2, '{{"stage": "done", "fraction": 1.0}}',
            '{STAMP}', '{STAMP}');
        INSERT INTO versions(id, parent, job_id, origin_job, state, kind, file_sha256,
            delta_sha256, delta_path, size_bytes, model_name, fingerprint, method, facts,
            created_at) VALUES ('v1', 'v0', 'j1', 'j1', 'committed', 'edit', '{file_sha}',
            '{sha}', 'deltas/{file_sha}.safetensors', {len(data)}, 'tiny', '{FP}', 'fe', '[]',
            '{STAMP}');
        UPDATE jobs SET version = 'v1' WHERE id = 'j1';
        INSERT INTO meta(key, value) VALUES ('active', 'v1');
        INSERT INTO jobs(id, payload, payload_sha256, state, attempts, created_at, updated_at)
            VALUES ('j2', '{{"kind": "revert", "version": "v1"}}', 'y', 'queued', 0,
            '{STAMP}', '{STAMP}');
        INSERT INTO jobs(id, payload, payload_sha256, state, error, attempts, created_at,
            updated_at) VALUES ('j3', '{{"facts": []}}', 'z', 'failed', 'bad', 1, '{STAMP}',
            '{STAMP}');
    """)
    conn.close()
    return data


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path / VersionStore.DB_NAME)
    try:
        return conn.execute(f"PRAGMA {name}").fetchall()
    finally:
        conn.close()


def test_an_old_data_directory_upgrades_in_place(tmp_path: Path) -> None:
    data = old_store(tmp_path)
    assert pragma(tmp_path, "user_version") == [(1,)]
    with VersionStore(tmp_path) as store:
        assert pragma(tmp_path, "user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 2
        assert pragma(tmp_path, "foreign_key_check") == []
        assert pragma(tmp_path, "integrity_check") == [("ok",)]
        # every row and field kept
        j1 = store.get_job("j1")
        assert (j1.state, j1.version, j1.attempts, j1.idempotency_key, j1.progress) == (
            JobState.committed, "v1", 2, "k1", {"stage": "done", "fraction": 1.0})
        assert (j1.created_at, j1.submitter, j1.cancel_requested_at) == (STAMP, None, None)
        assert store.get_job("j3").error == "bad"
        assert [j.id for j in store.unfinished_jobs()] == ["j2"]
        assert store.ensure_base("tiny", FP).id == "v0"
        assert store.active_version() == "v1" and store.read_delta("v1") == data
        assert store.audit() == []  # nothing is invented about the past
        # the new columns, state and table work on the upgraded file
        new, _ = store.create_job({"facts": [7]}, submitter="alice")
        assert new.seq > max(j.seq for j in store.list_jobs() if j.id != new.id)
        assert store.get_job(new.id).submitter == "alice"
        assert store.cancel_job("j2", "bob").state == JobState.cancelled
        v2 = commit(store, "v1", 2)
        assert [(e.action, e.from_version, e.to_version) for e in store.audit()] == [
            ("commit", "v1", v2)]
    with VersionStore(tmp_path) as again:  # opening a current file changes nothing
        assert again.get_job("j2").state == JobState.cancelled
        assert len(again.audit()) == 1


def test_a_new_directory_gets_the_same_schema_as_an_upgraded_one(tmp_path: Path) -> None:
    old_store(tmp_path / "old")
    VersionStore(tmp_path / "old").close()
    VersionStore(tmp_path / "new").close()

    def tables(path: Path) -> list[tuple[str, str]]:
        conn = sqlite3.connect(path / VersionStore.DB_NAME)
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                            " ORDER BY name").fetchall()
        conn.close()
        return [(name, " ".join(str(sql).split())) for name, sql in rows]

    assert tables(tmp_path / "old") == tables(tmp_path / "new")
    assert any(name == "audit" for name, _ in tables(tmp_path / "new"))


def test_a_newer_schema_is_refused_unchanged(tmp_path: Path) -> None:
    VersionStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / VersionStore.DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this code"):
        VersionStore(tmp_path)
    assert pragma(tmp_path, "user_version") == [(SCHEMA_VERSION + 1,)]


def test_the_audit_trail_names_every_change(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    store.ensure_base("tiny", FP)
    job, _ = store.create_job({"facts": [1]}, submitter="alice")
    delta, sha = make_delta(seed=1)
    v1 = store.commit_version(job.id, "v0", delta, sha).id
    v2 = commit(store, v1, 2)
    store.set_active("v0", actor="ops")
    store.set_active(v2, actor="ops")
    store.set_active(v1, actor="ops")
    branch = commit(store, "v0", 3, only_if_parent_active=False)
    store.set_active(v2, actor="admin")
    revert, _ = store.create_job({"kind": "revert", "version": v2}, submitter="carol")
    store.finish_job(revert.id, v1)
    store.mark_version_failed(v1, "corrupt")
    trail = [(e.action, e.actor, e.from_version, e.to_version, e.job_id) for e in store.audit()]
    assert trail[::-1] == [
        ("init", None, None, "v0", None),
        ("commit", "alice", "v0", v1, job.id),
        ("commit", None, v1, v2, store.get_version(v2).job_id),
        ("rollback", "ops", v2, "v0", None),
        ("roll_forward", "ops", "v0", v2, None),
        ("rollback", "ops", v2, v1, None),
        ("commit", None, v1, branch, store.get_version(branch).job_id),
        ("switch", "admin", branch, v2, None),
        ("revert", "carol", v2, v1, revert.id),
        ("quarantine", None, v1, "v0", None),
    ]
    assert [e.seq for e in store.audit(limit=2, before=store.audit()[1].seq)] == [
        e.seq for e in store.audit()[2:4]]
    store.close()


def test_cancel_queued_and_running_jobs(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    store.ensure_base("tiny", FP)
    queued, _ = store.create_job({"facts": [1]})
    done = store.cancel_job(queued.id, "bob")
    assert (done.state, done.cancel_requested_by) == (JobState.cancelled, "bob")
    assert store.cancel_job(queued.id, "eve").cancel_requested_by == "bob"  # idempotent
    with pytest.raises(Conflict):
        store.mark_running(queued.id)
    running, _ = store.create_job({"facts": [2]})
    store.mark_running(running.id)
    assert store.cancel_requested(running.id) is None
    asked = store.cancel_job(running.id, "bob")
    assert asked.state == JobState.running and store.cancel_requested(running.id) == "bob"
    data, sha = make_delta(seed=2)
    with pytest.raises(Cancelled):  # a commit after the request is refused, nothing written
        store.commit_version(running.id, "v0", data, sha)
    assert [v.id for v in store.list_versions()] == ["v0"]
    assert list((tmp_path / "deltas").iterdir()) == []
    assert store.mark_cancelled(running.id, "stopped").state == JobState.cancelled
    committed_job, _ = store.create_job({"facts": [3]})
    commit_data, commit_sha = make_delta(seed=3)
    store.commit_version(committed_job.id, "v0", commit_data, commit_sha)
    with pytest.raises(Conflict):
        store.cancel_job(committed_job.id, "bob")
    store.close()


def test_sigterm_abandon_does_not_count_an_attempt(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    job, _ = store.create_job({"facts": [1]})
    assert store.mark_running(job.id).attempts == 1
    back = store.abandon_job(job.id)
    assert (back.state, back.attempts) == (JobState.queued, 0)
    assert store.mark_running(job.id).attempts == 1  # a crash (no abandon) keeps it
    assert store.mark_running(job.id).attempts == 2
    store.close()


def _open_at_once(path: str, barrier: object) -> str | None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        store = VersionStore(path)
        store.ensure_base("tiny", FP)
        store.create_job({"facts": [1]}, submitter="x")
        store.close()
    except Exception as exc:  # reported to the test, not lost in the pool
        return f"{type(exc).__name__}: {exc}"
    return None


def test_processes_opening_a_new_directory_together(tmp_path: Path) -> None:
    """The API and the worker start together on a fresh data directory: each creates or finds
    the schema (one migrates, the others wait for it); none fails with "database is locked"."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        for round_ in range(8):
            path = tmp_path / f"data{round_}"
            barrier = manager.Barrier(4)
            errors = [e for e in pool.starmap(_open_at_once, [(str(path), barrier)] * 4) if e]
            assert errors == [], errors
            with VersionStore(path) as store:
                assert len(store.list_jobs()) == 4
            assert pragma(path, "user_version") == [(SCHEMA_VERSION,)]
