"""The edit stream: a consumer group with a fixed consumer name, and outbox recovery.

Why a Streams consumer group with a FIXED consumer name: an entry read but not acknowledged
stays in that consumer's pending list, so a worker restarted under the same name re-reads the
job it was working on *first*, before anything newer (job libraries were measured to reorder
or delay such a job). Entries are deleted when acknowledged, so the stream holds exactly the
unfinished work and its length is the back-pressure measure.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ResponseError

from app.queue.redis_util import decode, entry_field

if TYPE_CHECKING:
    from app.store import VersionStore

__all__ = ["GROUP", "Consumer", "EditQueue", "requeue_unfinished"]

log = logging.getLogger(__name__)

GROUP = "editors"


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
        return decode(self.client.xadd(self.stream, {"job_id": job_id}))

    def length(self) -> int:
        """Entries not yet acknowledged (acknowledged ones are deleted)."""
        return int(self.client.xlen(self.stream))

    def entries(self) -> list[tuple[str, str | None]]:
        """Every ``(entry_id, job_id)`` still in the stream, oldest first."""
        entries = self.client.xrange(self.stream)
        return [(decode(eid), entry_field(f, "job_id")) for eid, f in entries]

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
            job_id = entry_field(fields, "job_id")
            if job_id is None:  # deleted while pending, or not ours: drop it and look again
                q.ack(decode(eid))
                continue
            return decode(eid), job_id

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
