"""Edit jobs on a Redis Stream, events, the editor lock, the worker heartbeat, rate limits.

Why a Streams consumer group with a FIXED consumer name: an entry read but not acknowledged
stays in that consumer's pending list, so a worker restarted under the same name re-reads the
job it was working on *first*, before anything newer (job libraries were measured to reorder
or delay such a job). Entries are deleted when acknowledged, so the stream holds exactly the
unfinished work and its length is the back-pressure measure.

Delivery contract: **at least once**. A job can be delivered again (crash between commit and
ack, outbox recovery, a Redis that lost its data). That is harmless because
:meth:`app.store.VersionStore.commit_version` is idempotent by job id: the worker must look the
job up in the store, skip (and ack) it if it is already committed or failed, and otherwise
commit through the store. SQLite, not Redis, is the source of truth; Redis only carries
wake-ups, and :func:`requeue_unfinished` rebuilds the stream from SQLite when it lost data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from app.store import VersionStore

__all__ = [
    "Consumer",
    "EditQueue",
    "EditorLock",
    "EventListener",
    "LockLost",
    "RateLimiter",
    "WorkerHeartbeat",
    "is_alive",
    "publish_active_changed",
    "publish_committed",
    "publish_event",
    "requeue_unfinished",
    "worker_info",
]

log = logging.getLogger(__name__)

GROUP = "editors"
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def _s(value: Any) -> str:
    """Decode what a client returns whether or not it was made with decode_responses."""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _field(fields: dict[Any, Any] | None, name: str) -> str | None:
    if not fields:
        return None
    value = fields.get(name, fields.get(name.encode()))
    return None if value is None else _s(value)


# -- the stream -----------------------------------------------------------------------------
class EditQueue:
    """The stream ``{prefix}:edits`` read by the consumer group ``editors``."""

    def __init__(self, client: redis.Redis, prefix: str = "modeledit") -> None:
        self.client = client
        self.prefix = prefix
        self.stream = f"{prefix}:edits"
        self.group = GROUP

    def ensure_group(self) -> None:
        """Create the group (and the stream, MKSTREAM) if missing; safe to call any time,
        including after Redis lost its data. The group starts at id 0 so entries added before
        it existed (e.g. by an API process right after a flush) are still delivered."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def enqueue(self, job_id: str) -> str:
        """Append a job id; returns the stream entry id. Persist the job in the store FIRST
        (outbox): a job only in Redis could be lost, a job only in SQLite is re-enqueued."""
        return _s(self.client.xadd(self.stream, {"job_id": job_id}))

    def length(self) -> int:
        """Entries not yet acknowledged (acknowledged ones are deleted)."""
        return int(self.client.xlen(self.stream))

    def entries(self) -> list[tuple[str, str | None]]:
        """Every ``(entry_id, job_id)`` still in the stream, oldest first."""
        return [(_s(eid), _field(f, "job_id")) for eid, f in self.client.xrange(self.stream)]

    def ack(self, entry_id: str) -> None:
        """Acknowledge and delete an entry, atomically (MULTI)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    def delete(self) -> None:
        """Remove the stream and its group (tests, or a deliberate reset)."""
        self.client.delete(self.stream)


class Consumer:
    """One consumer of the group under a fixed name; hands out one entry at a time, in order.

    :meth:`next` always returns the oldest entry this consumer has received but not yet
    acknowledged (its pending list, XREADGROUP id ``0``) before it asks for a new one (``>``).
    So after a crash the job in progress comes back first, and until :meth:`ack` the same
    entry is returned again. Entries left pending by *another* consumer name for
    ``claim_idle_ms`` are claimed first (a worker renamed or replaced).
    """

    def __init__(
        self,
        queue: EditQueue,
        name: str = "editor",
        *,
        on_reset: Callable[[], Any] | None = None,
        claim_idle_ms: int | None = 60_000,
    ) -> None:
        self.queue = queue
        self.name = name
        self.on_reset = on_reset
        """Called after the group had to be recreated (Redis lost its data): pass
        ``lambda: requeue_unfinished(store, queue)`` so no accepted job is lost."""
        self.claim_idle_ms = claim_idle_ms

    def _read(self, entry_id: str, block_ms: int | None) -> tuple[str, str] | None:
        client, q = self.queue.client, self.queue
        while True:
            reply = client.xreadgroup(
                q.group, self.name, {q.stream: entry_id}, count=1, block=block_ms
            )
            if not reply:
                return None
            entries = reply[0][1]
            if not entries:
                return None
            eid, fields = entries[0]
            job_id = _field(fields, "job_id")
            if job_id is None:  # deleted while pending, or not ours: drop it and look again
                q.ack(_s(eid))
                continue
            return _s(eid), job_id

    def _claim(self) -> None:
        if self.claim_idle_ms is None:
            return
        q = self.queue
        with contextlib.suppress(ResponseError):
            q.client.xautoclaim(
                q.stream, q.group, self.name, self.claim_idle_ms, start_id="0-0", count=100
            )

    def next(self, block_ms: int = 1000) -> tuple[str, str] | None:
        """``(entry_id, job_id)`` of the next job, or ``None`` after ``block_ms`` of quiet."""
        for attempt in range(2):
            try:
                self._claim()
                pending = self._read("0", None)
                if pending is not None:
                    return pending
                return self._read(">", block_ms)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt:
                    raise
                self.reset()
        return None

    def reset(self) -> None:
        """Recreate the group after Redis lost it and run ``on_reset`` (outbox recovery)."""
        log.warning("edit queue group missing (Redis lost its data?); recreating it")
        self.queue.ensure_group()
        if self.on_reset is not None:
            self.on_reset()

    def ack(self, entry_id: str) -> None:
        self.queue.ack(entry_id)


# Rebuilds the stream in one atomic step: delete it, add the given job ids in order, recreate
# the group. Atomic so that an API process enqueueing at the same moment lands before (and is
# replaced) or after (a harmless duplicate) the rebuilt list, never in the middle of it.
_REBUILD = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV do
    redis.call('XADD', KEYS[1], '*', 'job_id', ARGV[i])
end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return #ARGV - 1
"""


def requeue_unfinished(store: VersionStore, queue: EditQueue) -> int:
    """Outbox recovery: make the stream hold every job SQLite says is queued/running.

    Call at worker start, after NOGROUP, and cheaply whenever the worker is idle. If the
    missing jobs are all newer than what the stream holds they are appended; otherwise the
    stream is rebuilt atomically in submission (seq) order, so recovery never reorders jobs.
    A job delivered again by this is harmless (see the module docstring). Returns how many
    jobs were missing from the stream.
    """
    queue.ensure_group()
    unfinished = store.unfinished_jobs()
    order = {job.id: i for i, job in enumerate(unfinished)}
    present = [jid for _, jid in queue.entries() if jid is not None]
    present_set = set(present)
    missing = [job.id for job in unfinished if job.id not in present_set]
    if not missing:
        return 0
    newest_present = max((order[j] for j in present if j in order), default=-1)
    if all(order[j] > newest_present for j in missing):
        pipe = queue.client.pipeline(transaction=False)  # one round trip, still in order
        for job_id in missing:
            pipe.xadd(queue.stream, {"job_id": job_id})
        pipe.execute()
    else:
        ids = [job.id for job in unfinished]
        queue.client.eval(_REBUILD, 1, queue.stream, queue.group, *ids)
    log.warning("re-enqueued %d unfinished job(s) missing from Redis", len(missing))
    return len(missing)


# -- events ---------------------------------------------------------------------------------
def events_channel(prefix: str) -> str:
    return f"{prefix}:events"


def publish_event(client: redis.Redis, prefix: str, type_: str, **fields: Any) -> int:
    """Publish ``{"type": type_, **fields}``; returns the number of listeners reached.
    Pub/sub is at-most-once: listeners resync from the store on (re)connect."""
    message = json.dumps({"type": type_, **fields, "time": time.time()}, default=str)
    return int(client.publish(events_channel(prefix), message))


def publish_committed(client: redis.Redis, prefix: str, version_id: str, **fields: Any) -> int:
    """A new version was committed (and usually made active)."""
    return publish_event(client, prefix, "committed", version=version_id, **fields)


def publish_active_changed(
    client: redis.Redis, prefix: str, version_id: str, **fields: Any
) -> int:
    """The active pointer moved without a new version (rollback)."""
    return publish_event(client, prefix, "active_changed", version=version_id, **fields)


class EventListener:
    """Calls ``callback(event: dict)`` for each event, from a background thread.

    Reconnects with backoff when Redis goes away; after every (re)subscription it calls
    ``on_connect()`` because messages published while disconnected are lost: re-read the
    active version from the store there. Exceptions of the callbacks are logged, not fatal.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        callback: Callable[[dict[str, Any]], Any],
        *,
        on_connect: Callable[[], Any] | None = None,
        max_backoff_s: float = 2.0,
    ) -> None:
        self.client = client
        self.channel = events_channel(prefix)
        self.callback = callback
        self.on_connect = on_connect
        self.max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconnects = 0
        self._connects = 0

    def start(self) -> EventListener:
        self._thread = threading.Thread(target=self._run, name="event-listener", daemon=True)
        self._thread.start()
        return self

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        """Block until the listener is subscribed (so a test's publish is not lost)."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EventListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a listener must survive a bad callback
            log.exception("event callback failed")

    def _count_connect(self, _connection: Any) -> None:
        self._connects += 1

    def _run(self) -> None:
        backoff = 0.05
        first = True
        while not self._stop.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                # the subscribe reply arrives as a message; wait for it to know we are live
                while not self._stop.is_set():
                    msg = pubsub.get_message(ignore_subscribe_messages=False, timeout=0.5)
                    if msg and msg.get("type") == "subscribe":
                        break
                if not first:
                    self.reconnects += 1
                first = False
                # redis-py may reconnect and resubscribe by itself inside get_message; count
                # connects so that such a silent reconnect also triggers a resync.
                pubsub.connection.register_connect_callback(self._count_connect)
                seen = self._connects
                self._subscribed.set()
                backoff = 0.05
                if self.on_connect is not None:
                    self._safe(self.on_connect)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if self._connects != seen:
                        seen = self._connects
                        self.reconnects += 1
                        if self.on_connect is not None:
                            self._safe(self.on_connect)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        event = json.loads(_s(msg["data"]))
                    except ValueError:
                        log.warning("ignoring a malformed event on %s", self.channel)
                        continue
                    self._safe(self.callback, event)
            except _REDIS_DOWN as exc:
                self._subscribed.clear()
                log.warning("event listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()


# -- one editor at a time -------------------------------------------------------------------
class LockLost(RuntimeError):
    """The editor lock expired or vanished (Redis flushed/restarted): stop before committing."""


class EditorLock:
    """A Redis lock so only one worker edits at a time; a second worker waits, never races.

    A background thread renews the TTL every ``ttl_s / 3`` seconds, so a long edit keeps the
    lock while a crashed worker's lock expires after ``ttl_s``. If renewal finds the lock gone
    :attr:`lost` becomes true: call :meth:`check` before committing. (A lost lock cannot cause
    a double commit anyway: commits are idempotent by job id and serialized by SQLite.)
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: float = 30) -> None:
        self.client = client
        self.name = f"{prefix}:editor-lock"
        self.ttl_s = ttl_s
        self._lock = client.lock(self.name, timeout=ttl_s, sleep=0.05, thread_local=False)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock (forever when ``timeout`` is None); ``False`` on timeout."""
        self._stop_renewal()
        got = self._lock.acquire(blocking=True, blocking_timeout=timeout)
        if got:
            self._lost.clear()
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew, name="editor-lock", daemon=True)
            self._thread.start()
        return bool(got)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._lock.reacquire()
            except LockError:
                log.error("editor lock %s was lost; the worker must stop editing", self.name)
                self._lost.set()
                return
            except _REDIS_DOWN as exc:
                log.warning("cannot renew editor lock (%s); retrying", exc)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def held(self) -> bool:
        """Whether this object still owns the lock (asks Redis)."""
        try:
            return bool(self._lock.owned())
        except _REDIS_DOWN:
            return False

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lock is still ours."""
        if self.lost or not self.held:
            self._lost.set()
            raise LockLost(f"the editor lock {self.name} is no longer held by this worker")

    def _stop_renewal(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def release(self) -> None:
        self._stop_renewal()
        with contextlib.suppress(LockError, *_REDIS_DOWN):
            self._lock.release()

    def __enter__(self) -> EditorLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- heartbeat ------------------------------------------------------------------------------
def _heartbeat_key(prefix: str) -> str:
    return f"{prefix}:worker:heartbeat"


class WorkerHeartbeat:
    """A key with a TTL, refreshed by a thread: ``/ready`` reports the worker alive while it
    exists. ``update(**info)`` adds what the worker does (active version, current job)."""

    def __init__(
        self, client: redis.Redis, prefix: str, ttl_s: float = 10, interval_s: float = 2
    ) -> None:
        self.client = client
        self.key = _heartbeat_key(prefix)
        self.ttl_ms = int(ttl_s * 1000)
        self.interval_s = interval_s
        self.info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write the key once; ``False`` if Redis is unreachable."""
        value = json.dumps({**self.info, "time": time.time()}, default=str)
        try:
            self.client.set(self.key, value, px=self.ttl_ms)
            return True
        except _REDIS_DOWN:
            return False

    def update(self, **info: Any) -> None:
        self.info.update(info)
        self.beat()

    def start(self) -> WorkerHeartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        """Stop beating and remove the key: a clean shutdown is reported at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(*_REDIS_DOWN):
            self.client.delete(self.key)

    def __enter__(self) -> WorkerHeartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_alive(client: redis.Redis, prefix: str) -> bool:
    """Whether a worker has beaten within its TTL (``False`` when Redis is unreachable)."""
    try:
        return bool(client.exists(_heartbeat_key(prefix)))
    except _REDIS_DOWN:
        return False


def worker_info(client: redis.Redis, prefix: str) -> dict[str, Any] | None:
    """What the live worker last reported, or ``None``."""
    try:
        raw = client.get(_heartbeat_key(prefix))
    except _REDIS_DOWN:
        return None
    return None if raw is None else json.loads(_s(raw))


# -- rate limiting --------------------------------------------------------------------------
# Sliding-window log in a sorted set, atomic in Lua, timed by the Redis clock so that every
# API process agrees. Denied hits are not recorded (a client that keeps retrying is let in as
# soon as its window frees a slot). Returns {allowed, retry_after_ms}.
_RATE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if oldest[2] then wait = tonumber(oldest[2]) + window - now end
return {0, wait}
"""


class RateLimiter:
    """Per-identity request limits shared by all API processes through Redis.

    Identities (bearer tokens, client addresses) are hashed before they become key names, so
    a token never appears in Redis, its keyspace notifications or a ``KEYS`` listing.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_RATE_SCRIPT)

    def key(self, identity: str) -> str:
        digest = hashlib.sha256(f"{self.prefix}\0{identity}".encode()).hexdigest()[:32]
        return f"{self.prefix}:rate:{digest}"

    def hit(self, identity: str, limit: int, window_s: int) -> tuple[bool, int]:
        """Count one request; ``(allowed, retry_after_s)`` (``retry_after_s`` 0 if allowed,
        else the whole seconds until a slot frees, at least 1). ``limit <= 0``: no limit."""
        if limit <= 0:
            return True, 0
        window_ms = max(1, int(window_s * 1000))
        allowed, wait_ms = self._script(
            keys=[self.key(identity)], args=[int(limit), window_ms, uuid.uuid4().hex]
        )
        if int(allowed):
            return True, 0
        return False, max(1, -(-int(wait_ms) // 1000))
