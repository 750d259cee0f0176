"""The edit queue, events, lock, heartbeat and rate limiter against real Redis servers.

Ordinary tests use the shared Redis (``REDIS_URL``, default redis://127.0.0.1:6379/0; an
embedded one when it does not answer) under a unique key prefix they delete afterwards.
Destructive scenarios (FLUSHALL, restarts) use a private server started in ``tmp_path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.queue import (
    Consumer,
    EditorLock,
    EditQueue,
    EventListener,
    LockLost,
    RateLimiter,
    WorkerHeartbeat,
    is_alive,
    publish_active_changed,
    publish_committed,
    requeue_unfinished,
    worker_info,
)
from app.queue.redis_server import RedisHandle, ensure_redis
from app.store import VersionStore
from tests.e2e.harness import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHARED_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    handle = ensure_redis(SHARED_URL, tmp_path_factory.mktemp("redis"))
    yield handle.url
    handle.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    p = f"test-{uuid.uuid4().hex}"
    yield p
    for key in client.scan_iter(match=f"{p}:*"):
        client.delete(key)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[RedisHandle]:
    handle = ensure_redis(None, tmp_path / "r")
    yield handle
    handle.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VersionStore]:
    s = VersionStore(tmp_path / "data")
    s.ensure_base("tiny", "f" * 64)
    yield s
    s.close()


def submit(store: VersionStore, queue: EditQueue, n: int) -> list[str]:
    """What the API does: persist first (outbox), then enqueue."""
    ids = []
    for i in range(n):
        job, _ = store.create_job({"facts": [i]})
        queue.enqueue(job.id)
        ids.append(job.id)
    return ids


def work(store: VersionStore, consumer: Consumer, limit: int = 100) -> list[str]:
    """A minimal worker loop with the delivery contract: skip finished jobs, commit, ack."""
    done = []
    for _ in range(limit):
        got = consumer.next(block_ms=50)
        if got is None:
            return done
        entry, job_id = got
        job = store.get_job(job_id)
        if not job.finished:
            store.mark_running(job_id)
            store.commit_version(job_id, store.active_version(), job_id.encode() * 10, job_id)
            done.append(job_id)
        consumer.ack(entry)
    raise AssertionError("queue did not drain")


# -- stream and consumer --------------------------------------------------------------------
def test_group_is_idempotent_and_length_counts_unacked(client: redis.Redis, prefix: str) -> None:
    q = EditQueue(client, prefix)
    q.ensure_group()
    q.ensure_group()  # BUSYGROUP is fine
    assert q.length() == 0
    for job in ("a", "b", "c"):
        q.enqueue(job)
    assert q.length() == 3
    c = Consumer(q)
    entry, job = c.next(100)
    assert job == "a" and q.length() == 3  # delivered, not acknowledged
    c.ack(entry)
    assert q.length() == 2
    assert [j for _, j in q.entries()] == ["b", "c"]


def test_consumer_gives_one_entry_at_a_time_in_order(client: redis.Redis, prefix: str) -> None:
    q = EditQueue(client, prefix)
    q.ensure_group()
    for job in ("j1", "j2", "j3"):
        q.enqueue(job)
    c = Consumer(q, "editor")
    first = c.next(100)
    assert first is not None and first[1] == "j1"
    assert c.next(100) == first  # not acknowledged: the same entry again, never j2
    c.ack(first[0])
    seen = []
    while (got := c.next(50)) is not None:
        seen.append(got[1])
        c.ack(got[0])
    assert seen == ["j2", "j3"]
    started = time.monotonic()
    assert c.next(200) is None
    assert time.monotonic() - started >= 0.15  # it blocked for new entries


_KILLED_CONSUMER = """
import sys, time, redis
from app.queue import Consumer, EditQueue
q = EditQueue(redis.Redis.from_url(sys.argv[1]), sys.argv[2])
entry, job = Consumer(q, "editor").next(5000)
print(entry, job, flush=True)
time.sleep(60)
"""


def test_killed_consumer_entry_is_reread_first(
    client: redis.Redis, redis_url: str, prefix: str
) -> None:
    q = EditQueue(client, prefix)
    q.ensure_group()
    for job in ("j1", "j2", "j3"):
        q.enqueue(job)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_CONSUMER), redis_url, prefix],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().split()
        assert line[1:] == ["j1"], proc.stderr.read() if not line else line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    q.enqueue("j4")  # new work arrives while the worker is down
    c = Consumer(q, "editor")  # the restarted worker, same name
    order = []
    while (got := c.next(50)) is not None:
        order.append(got[1])
        c.ack(got[0])
    assert order == ["j1", "j2", "j3", "j4"]
    assert q.length() == 0


def test_entry_left_by_another_consumer_name_is_claimed(client: redis.Redis, prefix: str) -> None:
    q = EditQueue(client, prefix)
    q.ensure_group()
    for job in ("j1", "j2"):
        q.enqueue(job)
    assert Consumer(q, "old-name").next(100)[1] == "j1"  # then it died

    def idle_ms() -> int:
        (pending,) = client.xpending_range(q.stream, q.group, "-", "+", 1)
        return pending["time_since_delivered"]

    wait_for(lambda: idle_ms() >= 50, 10, "the dead consumer's entry to be idle 50 ms")
    c = Consumer(q, "editor", claim_idle_ms=50)
    got = c.next(100)
    assert got is not None and got[1] == "j1"


def test_duplicate_delivery_has_one_effect(
    client: redis.Redis, prefix: str, store: VersionStore
) -> None:
    q = EditQueue(client, prefix)
    q.ensure_group()
    (job_id,) = submit(store, q, 1)
    q.enqueue(job_id)  # delivered twice
    assert work(store, Consumer(q)) == [job_id]
    assert [v.job_id for v in store.list_versions()] == [None, job_id]
    assert q.length() == 0


def test_flushall_then_requeue_restores_jobs_in_order(
    private: RedisHandle, store: VersionStore
) -> None:
    client = private.client()
    q = EditQueue(client, "svc")
    q.ensure_group()
    ids = submit(store, q, 5)
    consumer = Consumer(q, "editor", on_reset=lambda: requeue_unfinished(store, q))
    entry, first = consumer.next(100)
    assert first == ids[0]
    store.mark_running(first)  # the worker is editing job 0; not acknowledged
    client.flushall()
    # The worker had taken job 0 (running, not acked) when Redis lost everything, and an
    # API process enqueued a new job before the worker noticed (no group yet: NOGROUP).
    newest = submit(store, q, 1)[0]
    assert store.count_unfinished() == 6
    done = work(store, consumer)
    assert done == ids + [newest]  # nothing lost, submission order kept
    assert [v.job_id for v in store.list_versions()[1:]] == ids + [newest]
    client.close()


def test_requeue_at_start_after_data_loss(private: RedisHandle, store: VersionStore) -> None:
    client = private.client()
    q = EditQueue(client, "svc")
    q.ensure_group()
    ids = submit(store, q, 4)
    client.flushall()
    q.ensure_group()  # e.g. an API process started first: no NOGROUP will be seen
    assert requeue_unfinished(store, q) == 4
    assert requeue_unfinished(store, q) == 0  # nothing missing any more
    assert [j for _, j in q.entries()] == ids
    assert work(store, Consumer(q)) == ids
    client.close()


def test_requeue_rebuilds_when_newer_jobs_got_ahead(
    client: redis.Redis, prefix: str, store: VersionStore
) -> None:
    q = EditQueue(client, prefix)
    q.ensure_group()
    older = [store.create_job({"i": i})[0].id for i in range(3)]  # persisted, never enqueued
    newer = submit(store, q, 2)
    assert requeue_unfinished(store, q) == 3
    assert [j for _, j in q.entries()] == older + newer


# -- lock, heartbeat ------------------------------------------------------------------------
def ttl_renewed(client: redis.Redis, key: str, times: int) -> Callable[[], bool]:
    """A predicate for :func:`wait_for`: true once ``key``'s TTL was seen going up ``times``
    times (each rise is a renewal; a key that expired and was not renewed fails the test)."""
    seen = {"last": -1, "rises": 0}

    def renewed() -> bool:
        ttl = client.pttl(key)
        assert ttl > 0, f"{key} expired (PTTL {ttl})"
        if seen["last"] >= 0 and ttl > seen["last"]:
            seen["rises"] += 1
        seen["last"] = ttl
        return seen["rises"] >= times

    return renewed


def test_second_lock_holder_waits(redis_url: str, prefix: str) -> None:
    c1, c2 = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    first, second = EditorLock(c1, prefix, ttl_s=0.6), EditorLock(c2, prefix, ttl_s=0.6)
    assert first.acquire(timeout=1)
    got_at: list[float] = []

    def wait_for_lock() -> None:
        if second.acquire(timeout=10):
            got_at.append(time.monotonic())

    waiter = threading.Thread(target=wait_for_lock)
    waiter.start()
    # 8 renewals seen (the TTL going up) span 2.5 TTLs: only they keep the first lock alive
    wait_for(ttl_renewed(c1, first.name, 8), 30, "8 renewals of the first holder's lock")
    assert got_at == []
    first.check()
    released = time.monotonic()
    first.release()
    waiter.join(5)
    assert got_at and got_at[0] - released < 0.5
    assert second.held and not first.held
    with pytest.raises(LockLost):
        first.check()
    second.release()
    c1.close()
    c2.close()


def test_lost_lock_is_reported(client: redis.Redis, prefix: str) -> None:
    lock = EditorLock(client, prefix, ttl_s=0.3)
    assert lock.acquire(timeout=1)
    client.delete(lock.name)  # what a FLUSHALL or an expired TTL does
    wait_for(lambda: lock.lost, 10, "the renewal to find the lock gone")
    with pytest.raises(LockLost):
        lock.check()
    lock.release()


def test_heartbeat(client: redis.Redis, prefix: str) -> None:
    assert not is_alive(client, prefix)
    beat = WorkerHeartbeat(client, prefix, ttl_s=0.3, interval_s=0.05).start()
    beat.update(active="v3")
    first = worker_info(client, prefix)["time"]
    # alive with a beat written after the first one's TTL ran out: the thread renews the key
    wait_for(lambda: is_alive(client, prefix)
             and worker_info(client, prefix)["time"] > first + 0.3,
             10, "a beat later than the first one's TTL")
    assert worker_info(client, prefix)["active"] == "v3"
    beat.stop()
    assert not is_alive(client, prefix)
    once = WorkerHeartbeat(client, prefix, ttl_s=0.2)
    assert once.beat() and is_alive(client, prefix)
    # a worker that stopped beating (killed) expires
    wait_for(lambda: not is_alive(client, prefix), 10, "the heartbeat to expire")


# -- rate limits ----------------------------------------------------------------------------
def test_rate_limit_holds_across_clients(redis_url: str, prefix: str) -> None:
    c1, c2 = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    a, b = RateLimiter(c1, prefix), RateLimiter(c2, prefix)  # two API processes
    token = "secret-token-123"
    results = [a.hit(token, 3, 1), b.hit(token, 3, 1), a.hit(token, 3, 1)]
    assert results == [(True, 0)] * 3
    allowed, retry = b.hit(token, 3, 1)
    assert not allowed and retry == 1
    assert a.hit("someone-else", 3, 1) == (True, 0)
    keys = [k.decode() for k in c1.scan_iter(match=f"{prefix}:*")]
    assert keys and not any(token in k for k in keys)  # tokens are hashed
    # denied hits are not recorded, so retrying is how a client waits for the window
    wait_for(lambda: a.hit(token, 3, 1) == (True, 0), 10, "the window to free a slot")
    assert a.hit(token, 0, 1) == (True, 0)  # limit 0: off
    c1.close()
    c2.close()


# -- events ---------------------------------------------------------------------------------
def test_listener_gets_committed_events(redis_url: str, prefix: str) -> None:
    events: list[dict] = []
    got = threading.Event()

    def on_event(event: dict) -> None:
        events.append(event)
        if len(events) == 2:
            got.set()

    pub = redis.Redis.from_url(redis_url)
    listener = EventListener(redis.Redis.from_url(redis_url), prefix, on_event).start()
    assert listener.wait_subscribed()
    assert publish_committed(pub, prefix, "v7") == 1
    assert publish_active_changed(pub, prefix, "v3") == 1
    assert got.wait(3)
    assert [(e["type"], e["version"]) for e in events] == [
        ("committed", "v7"),
        ("active_changed", "v3"),
    ]
    listener.stop()
    assert listener._thread is not None and not listener._thread.is_alive()
    pub.close()


def test_listener_reconnects_after_redis_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "r"
    handle = ensure_redis(None, data_dir)
    events: list[dict] = []
    connects = threading.Semaphore(0)
    listener = EventListener(
        redis.Redis.from_url(handle.url), "svc", events.append, on_connect=connects.release
    ).start()
    try:
        assert connects.acquire(timeout=3)
        handle.stop()
        handle = ensure_redis(None, data_dir)  # same socket, new server
        assert connects.acquire(timeout=10), "listener did not reconnect"
        pub = handle.client()
        assert publish_committed(pub, "svc", "v2") == 1
        wait_for(lambda: events, 10, "the v2 event")
        assert [e["version"] for e in events] == ["v2"]
        assert listener.reconnects >= 1
        # a dropped connection that redis-py re-establishes by itself must resync too
        assert pub.client_kill_filter(_type="pubsub") == 1
        assert connects.acquire(timeout=5), "silent reconnect was not reported"
        wait_for(lambda: publish_committed(pub, "svc", "v3"), 10, "a subscriber for v3")
        wait_for(lambda: len(events) >= 2, 10, "the v3 event")
        assert [e["version"] for e in events][-1] == "v3"
        pub.close()
    finally:
        listener.stop()
        handle.stop()
