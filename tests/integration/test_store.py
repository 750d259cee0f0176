"""The version store against a real SQLite file, real files, real processes and real faults."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from app.store import (
    Conflict,
    CorruptDelta,
    NotFound,
    StoreError,
    StoreWriteError,
    VersionStore,
)
from app.store.payloads import EditJob, RevertJob
from app.store.records import JobState
from app.store.tables import SCHEMA
from editing.weights.delta import LayerUpdate, WeightDelta
from tests.e2e.harness import wait_for

FP = "f" * 64


def make_delta(rows: int = 4, cols: int = 3, seed: int = 0) -> tuple[bytes, str]:
    gen = torch.Generator().manual_seed(seed)
    delta = WeightDelta({0: LayerUpdate(torch.randn(rows, cols, generator=gen))}, model_type="llama")
    return delta.to_bytes(), delta.sha256


@pytest.fixture
def store(tmp_path: Path) -> VersionStore:
    s = VersionStore(tmp_path / "data")
    s.ensure_base("tiny", FP)
    yield s
    s.close()


def commit(store: VersionStore, parent: str, seed: int, **kw) -> str:
    job, _ = store.create_job({"facts": [seed]})
    data, sha = make_delta(seed=seed)
    return store.commit_version(job.id, parent, data, sha, method="fe", facts=[seed], **kw).id


def snapshot(store: VersionStore) -> tuple:
    """Everything a failed operation must leave unchanged."""
    return (
        [v.to_dict() for v in store.list_versions()],
        [j.to_dict() for j in store.list_jobs(limit=10_000)],
        store.active_version(),
    )


def leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "deltas").iterdir() if p.name.endswith(".tmp"))


# -- jobs -----------------------------------------------------------------------------------
def test_idempotency_key_returns_the_same_job(store: VersionStore) -> None:
    job, created = store.create_job({"facts": [1]}, idempotency_key="abc")
    again, created_again = store.create_job({"facts": [1]}, idempotency_key="abc")
    assert created and not created_again
    assert again.id == job.id and again.seq == job.seq
    other, created_other = store.create_job({"facts": [1]})
    assert created_other and other.id != job.id
    with pytest.raises(Conflict, match="different request"):
        store.create_job({"facts": [2]}, idempotency_key="abc")
    assert store.count_unfinished() == 2


def test_idempotency_key_under_concurrency(store: VersionStore) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            results.append(store.create_job({"facts": ["x"]}, idempotency_key="same")[0].id)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and len(results) == 16
    assert len(store.list_jobs()) == 1


def test_job_lifecycle(store: VersionStore) -> None:
    job, _ = store.create_job({"facts": [1]})
    assert store.get_job(job.id).state == "queued"
    assert store.mark_running(job.id).attempts == 1
    assert store.mark_running(job.id).attempts == 2  # restarted after a crash
    assert store.set_progress(job.id, {"stage": "z", "fraction": 0.5})
    assert store.get_job(job.id).progress == {"stage": "z", "fraction": 0.5}
    failed = store.fail_job(job.id, "out of memory")
    assert (failed.state, failed.error) == ("failed", "out of memory")
    assert not store.set_progress(job.id, {"stage": "late"})
    with pytest.raises(Conflict):
        store.mark_running(job.id)
    data, sha = make_delta()
    with pytest.raises(Conflict):
        store.commit_version(job.id, "v0", data, sha)
    with pytest.raises(NotFound):
        store.get_job("nope")
    with pytest.raises(NotFound):
        store.set_progress("nope", {})
    assert store.unfinished_jobs() == [] and store.count_unfinished() == 0
    assert [j.id for j in store.list_jobs(states=["failed"])] == [job.id]


def test_unfinished_jobs_in_submission_order(store: VersionStore) -> None:
    ids = [store.create_job({"facts": [i]})[0].id for i in range(5)]
    store.mark_running(ids[2])
    store.fail_job(ids[1], "bad")
    assert [j.id for j in store.unfinished_jobs()] == [ids[0], ids[2], ids[3], ids[4]]
    assert [j.id for j in store.list_jobs(limit=2)] == [ids[4], ids[3]]  # newest first


# -- versions -------------------------------------------------------------------------------
def test_base_is_created_once_and_refuses_another_model(tmp_path: Path) -> None:
    s = VersionStore(tmp_path)
    base = s.ensure_base("tiny", FP)
    assert (base.id, base.parent, base.kind) == ("v0", None, "base")
    assert s.ensure_base("tiny", FP).seq == base.seq
    assert s.active_version() == "v0"
    with pytest.raises(StoreError, match="belongs to another model"):
        s.ensure_base("other", "0" * 64)
    s.close()
    with pytest.raises(StoreError, match="another model"):
        VersionStore(tmp_path).ensure_base("other", "0" * 64)


def test_commit_twice_gives_one_version(store: VersionStore) -> None:
    job, _ = store.create_job({"facts": [1]})
    data, sha = make_delta(seed=1)
    first = store.commit_version(job.id, "v0", data, sha, method="fe", facts=[1])
    other_data, other_sha = make_delta(seed=2)  # a re-delivered job recomputed differently
    second = store.commit_version(job.id, "v0", other_data, other_sha, method="fe")
    assert second.id == first.id == "v1"
    assert second.file_sha256 == hashlib.sha256(data).hexdigest()
    assert [v.id for v in store.list_versions()] == ["v0", "v1"]
    assert len(list((store.data_dir / "deltas").glob("*.safetensors"))) == 1
    assert store.get_job(job.id).state == "committed"
    assert store.get_job(job.id).version == "v1"
    assert store.active_version() == "v1"
    assert store.read_delta("v1") == data
    assert WeightDelta.from_bytes(store.read_delta(first)).sha256 == sha


def test_chain_order_and_rollback(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    v2 = commit(store, v1, 2)
    assert store.active_version() == v2
    assert store.set_active(v1).id == v1
    v3 = commit(store, v1, 3)  # a branch from the rolled-back version
    assert [v.id for v in store.chain(v3)] == ["v0", v1, v3]
    assert [v.id for v in store.chain(v2)] == ["v0", v1, v2]
    assert [v.id for v in store.chain("v0")] == ["v0"]
    assert store.active_version() == v3
    store.set_active("v0")
    assert store.active_version() == "v0"
    with pytest.raises(StoreError, match="no delta"):
        store.read_delta("v0")


def test_set_active_refuses_unknown_and_failed(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    v2 = commit(store, v1, 2)
    bad_job, _ = store.create_job({"facts": ["bad"]})
    store.fail_job(bad_job.id, "nan in z")
    with pytest.raises(NotFound):
        store.set_active("v99")
    with pytest.raises(NotFound):
        store.set_active(bad_job.id)  # a failed job has no version
    store.mark_version_failed(v1, "delta file corrupt")
    assert store.active_version() == "v0"  # fell back below the quarantined version
    with pytest.raises(Conflict, match="failed"):
        store.set_active(v1)
    with pytest.raises(Conflict, match="failed"):
        store.set_active(v2)  # its chain contains the failed version
    with pytest.raises(Conflict):
        commit(store, v1, 3)  # nothing builds on a failed version
    assert store.active_version() == "v0"


def test_commit_only_if_parent_still_active(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    store.set_active("v0")  # a rollback while the next edit was computed on v1
    v2 = commit(store, v1, 2, only_if_parent_active=True)
    assert store.get_version(v2).parent == v1
    assert store.active_version() == "v0"  # the rollback wins


def test_derived_versions_for_a_revert(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    v2 = commit(store, v1, 2)
    v3 = commit(store, v2, 3)
    revert, _ = store.create_job({"revert": v2})
    data, sha = make_delta(seed=33)
    src = {"reverted": v2, "replays": v3}
    d1 = store.commit_derived_version(v1, data, sha, origin_job=revert.id, step=0, source=src)
    again = store.commit_derived_version(v1, data, sha, origin_job=revert.id, step=0)
    assert again.id == d1.id and d1.kind == "revert" and d1.job_id is None
    assert d1.source == src
    assert store.active_version() == v3  # not moved until the job finishes
    store.finish_job(revert.id, d1.id)
    assert store.finish_job(revert.id, d1.id).version == d1.id  # idempotent
    assert store.active_version() == d1.id
    assert [v.id for v in store.chain(d1.id)] == ["v0", v1, d1.id]
    with pytest.raises(Conflict):
        store.finish_job(revert.id, v3)


def test_evaluation_is_stored(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    store.set_evaluation(v1, {"efficacy": 1.0, "n": 1})
    assert store.get_version(v1).evaluation == {"efficacy": 1.0, "n": 1}
    assert store.get_version(v1).to_dict()["facts"] == [1]


# -- faults ---------------------------------------------------------------------------------
def test_corrupt_or_missing_delta_is_refused(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    path = store.delta_file(v1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDelta, match="corrupt"):
        store.read_delta(v1)
    path.unlink()
    with pytest.raises(CorruptDelta, match="missing"):
        store.read_delta(v1)


def test_unwritable_deltas_dir_fails_cleanly(store: VersionStore) -> None:
    commit(store, "v0", 1)
    job, _ = store.create_job({"facts": [2]})
    before = snapshot(store)
    deltas = store.data_dir / "deltas"
    shutil.rmtree(deltas)
    deltas.write_text("not a directory")  # works as root too, unlike chmod
    data, sha = make_delta(seed=2)
    with pytest.raises(StoreWriteError, match="cannot write the delta"):
        store.commit_version(job.id, "v1", data, sha)
    assert snapshot(store) == before
    store.fail_job(job.id, "disk")  # the worker can still record why
    assert store.get_job(job.id).state == "failed"
    assert store.active_version() == "v1"


def test_write_failing_mid_file_leaves_no_temp_file(store: VersionStore) -> None:
    """RLIMIT_FSIZE makes write() fail part-way (EFBIG), like a disk filling up mid-file."""
    job, _ = store.create_job({"facts": [1]})
    before = snapshot(store)
    data, sha = make_delta(rows=1024, cols=1024)  # 4 MiB
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(StoreWriteError):
            store.commit_version(job.id, "v0", data, sha)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert snapshot(store) == before
    assert leftovers(store.data_dir) == []
    assert list((store.data_dir / "deltas").iterdir()) == []
    assert store.commit_version(job.id, "v0", data, sha).id == "v1"  # works once space is back


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a tiny tmpfs")
def test_disk_full_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])
    if res.returncode:
        pytest.skip("mount not permitted here")
    try:
        s = VersionStore(mnt / "data")
        s.ensure_base("tiny", FP)
        job, _ = s.create_job({"facts": [1]})
        before = snapshot(s)
        data, sha = make_delta(rows=512, cols=1024)  # 2 MiB > 1 MiB of disk
        with pytest.raises(StoreWriteError, match="No space left"):
            s.commit_version(job.id, "v0", data, sha)
        assert snapshot(s) == before and leftovers(s.data_dir) == []
        s.fail_job(job.id, "disk full")
        assert s.get_job(job.id).state == "failed"
        s.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_leftovers_are_cleaned_at_start(store: VersionStore) -> None:
    v1 = commit(store, "v0", 1)
    deltas = store.data_dir / "deltas"
    kept = store.delta_file(v1)
    (deltas / ".abc.safetensors.x1.tmp").write_bytes(b"partial")
    orphan = deltas / ("0" * 64 + ".safetensors")
    orphan.write_bytes(b"written, never committed")
    other = deltas / "README"
    other.write_text("not ours")
    # a starting process must not clean while another one is committing
    with store.db.file_lock(exclusive=False):
        VersionStore(store.data_dir).close()
        assert orphan.exists()
    fresh = VersionStore(store.data_dir)
    assert sorted(p.name for p in deltas.iterdir()) == sorted([kept.name, "README"])
    assert fresh.read_delta(v1) == kept.read_bytes()
    assert fresh.active_version() == v1
    fresh.close()


def _committer(data_dir: Path, ready) -> None:
    """Commit 1 MiB deltas in a loop until killed (a forked child: starts in milliseconds)."""
    s = VersionStore(data_dir)
    s.ensure_base("tiny", FP)
    ready.set()
    for i in range(100_000):
        job, _ = s.create_job({"facts": [i]})
        s.commit_version(job.id, s.active_version(), os.urandom(1 << 20), "x")


def _versions(data_dir: Path) -> int:
    s = VersionStore(data_dir, clean=False)  # clean=False: observe, do not tidy up
    try:
        return len(s.list_versions())
    finally:
        s.close()


def test_sigkill_during_commits_leaves_a_consistent_store(tmp_path: Path) -> None:
    """Each kill follows an observed number of commits (1-3, from the seed), never a timer;
    where in the next commit it lands is up to the scheduler, which is the point."""
    data_dir = tmp_path / "data"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    for _ in range(6):
        ready = ctx.Event()
        proc = ctx.Process(target=_committer, args=(data_dir, ready))
        proc.start()
        assert ready.wait(10)
        target = _versions(data_dir) + rng.randint(1, 3)
        wait_for(lambda n=target: _versions(data_dir) >= n, 60, f"{target} versions committed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL  # it was still committing when killed
    s = VersionStore(data_dir)
    versions = s.list_versions()
    assert len(versions) > 6
    committed = s.list_jobs(states=["committed"], limit=100_000)
    assert sorted(j.version for j in committed) == sorted(v.id for v in versions[1:])
    for v in versions[1:]:
        assert len(s.read_delta(v)) == 1 << 20  # every recorded file is complete and verified
        assert v.parent == f"v{int(v.id[1:]) - 1}"
    files = {p.name for p in (data_dir / "deltas").iterdir()}
    assert files == {Path(v.delta_path).name for v in versions[1:]}  # no orphans, no temp
    assert s.active_version() == versions[-1].id
    s.close()


def _writer(data_dir: Path, n: int) -> None:
    s = VersionStore(data_dir)
    for i in range(40):
        s.create_job({"w": n, "i": i})
        s.create_job({"shared": True}, idempotency_key="shared-key")
    s.close()


def test_several_processes_share_the_store(tmp_path: Path) -> None:
    s = VersionStore(tmp_path)
    s.ensure_base("tiny", FP)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    jobs = s.list_jobs(limit=1000, newest_first=False)
    assert len(jobs) == 4 * 40 + 1
    assert sum(1 for j in jobs if j.idempotency_key == "shared-key") == 1
    conn = sqlite3.connect(tmp_path / "store.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    s.close()


# The schema exactly as ``app/store.py`` created it before the store became a package: every
# data directory made so far has these tables, and the package must keep opening them.
MAIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'committed', 'failed')),
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
    state TEXT NOT NULL CHECK (state IN ('committed', 'failed')),
    kind TEXT NOT NULL CHECK (kind IN ('base', 'edit', 'revert')),
    file_sha256 TEXT,
    delta_sha256 TEXT,
    delta_path TEXT,
    size_bytes INTEGER,
    model_name TEXT,
    fingerprint TEXT,
    method TEXT,
    hparams TEXT NOT NULL DEFAULT '{}',
    facts TEXT NOT NULL DEFAULT '[]',
    layer_stats TEXT NOT NULL DEFAULT 'null',
    diagnostics TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
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


def test_schema_is_unchanged() -> None:
    assert SCHEMA == MAIN_SCHEMA


def test_a_store_made_with_the_old_schema_opens(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / VersionStore.DB_NAME)
    conn.executescript(MAIN_SCHEMA + "PRAGMA user_version = 1; PRAGMA journal_mode = WAL;")
    (tmp_path / "deltas").mkdir()
    data, sha = make_delta()
    file_sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "deltas" / f"{file_sha}.safetensors").write_bytes(data)
    stamp = "2026-01-01T00:00:00.000Z"
    conn.executescript(f"""
        INSERT INTO versions(id, parent, state, kind, model_name, fingerprint, method, created_at)
            VALUES ('v0', NULL, 'committed', 'base', 'tiny', '{FP}', 'base', '{stamp}');
        INSERT INTO jobs(id, idempotency_key, payload, payload_sha256, state, version, attempts,
            created_at, updated_at) VALUES ('j1', 'k1', '{{"facts": [], "method": "fe"}}',
            'x', 'committed', NULL, 1, '{stamp}', '{stamp}');
        INSERT INTO versions(id, parent, job_id, origin_job, state, kind, file_sha256,
            delta_sha256, delta_path, size_bytes, model_name, fingerprint, method, facts,
            created_at) VALUES ('v1', 'v0', 'j1', 'j1', 'committed', 'edit', '{file_sha}',
            '{sha}', 'deltas/{file_sha}.safetensors', {len(data)}, 'tiny', '{FP}', 'fe', '[]',
            '{stamp}');
        UPDATE jobs SET version = 'v1' WHERE id = 'j1';
        INSERT INTO meta(key, value) VALUES ('active', 'v1');
        INSERT INTO jobs(id, payload, payload_sha256, state, attempts, created_at, updated_at)
            VALUES ('j2', '{{"kind": "revert", "version": "v1"}}', 'y', 'queued', 0,
            '{stamp}', '{stamp}');
    """)
    conn.close()
    with VersionStore(tmp_path) as store:
        assert store.ensure_base("tiny", FP).id == "v0"
        assert store.active_version() == "v1"
        assert [v.id for v in store.chain("v1")] == ["v0", "v1"]
        assert store.read_delta("v1") == data
        old = store.get_job("j1")
        assert old.state is JobState.committed and old.request == EditJob(method="fe")
        assert store.get_job("j2").request == RevertJob(version="v1")
        assert [j.id for j in store.unfinished_jobs()] == ["j2"]
        v2 = commit(store, "v1", 2)
        assert store.get_version(v2).parent == "v1"
