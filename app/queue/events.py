"""Events on Redis pub/sub: a version was committed, the active pointer moved.

Pub/sub is at-most-once: a listener that was disconnected missed what was published meanwhile,
so :class:`EventListener` calls ``on_connect`` after every (re)subscription for a resync from
the store, which stays the source of truth.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from app.queue.redis_util import REDIS_DOWN, decode

__all__ = [
    "EventListener",
    "events_channel",
    "publish_active_changed",
    "publish_committed",
    "publish_event",
]

log = logging.getLogger(__name__)


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
                        event = json.loads(decode(msg["data"]))
                    except ValueError:
                        log.warning("ignoring a malformed event on %s", self.channel)
                        continue
                    self._safe(self.callback, event)
            except REDIS_DOWN as exc:
                self._subscribed.clear()
                log.warning("event listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
