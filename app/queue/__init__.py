"""Redis: edit jobs on a Stream, events, the editor lock, the worker heartbeat, rate limits.

One module per job: :mod:`app.queue.stream` (EditQueue, Consumer, requeue_unfinished),
:mod:`app.queue.events` (pub/sub), :mod:`app.queue.lock` (EditorLock, LockLost),
:mod:`app.queue.heartbeat` (WorkerHeartbeat, is_alive, worker_info) and
:mod:`app.queue.ratelimit` (RateLimiter). The names are re-exported here.

Delivery contract: **at least once**. A job can be delivered again (crash between commit and
ack, outbox recovery, a Redis that lost its data). That is harmless because
:meth:`app.store.VersionStore.commit_version` is idempotent by job id: the worker must look the
job up in the store, skip (and ack) it if it is already committed or failed, and otherwise
commit through the store. SQLite, not Redis, is the source of truth; Redis only carries
wake-ups, and :func:`requeue_unfinished` rebuilds the stream from SQLite when it lost data.
"""

from __future__ import annotations

from app.queue.events import (
    EventListener,
    events_channel,
    publish_active_changed,
    publish_committed,
    publish_event,
)
from app.queue.heartbeat import WorkerHeartbeat, is_alive, worker_info
from app.queue.lock import EditorLock, LockLost
from app.queue.ratelimit import RateLimiter
from app.queue.stream import GROUP, Consumer, EditQueue, requeue_unfinished

__all__ = [
    "GROUP",
    "Consumer",
    "EditQueue",
    "EditorLock",
    "EventListener",
    "LockLost",
    "RateLimiter",
    "WorkerHeartbeat",
    "events_channel",
    "is_alive",
    "publish_active_changed",
    "publish_committed",
    "publish_event",
    "requeue_unfinished",
    "worker_info",
]
