"""API processes follow the active version the worker (or a rollback elsewhere) set.

Events over Redis pub/sub make the switch immediate; they are at-most-once, so the follower
also re-reads the store on every (re)subscription and every ``poll_s`` seconds. SQLite is the
truth, Redis only the wake-up: a lost message delays a switch by at most ``poll_s``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from app.queue import EventListener
from app.serving.runtime import ModelRuntime
from app.store import VersionStore

log = logging.getLogger(__name__)


class Follower:
    """Keeps ``runtime.active`` equal to the store's active version."""

    def __init__(
        self,
        store: VersionStore,
        runtime: ModelRuntime,
        client: redis.Redis | None,
        prefix: str,
        poll_s: float = 2.0,
    ):
        self.store = store
        self.runtime = runtime
        self.poll_s = poll_s
        self.error: str | None = None
        """Why the active version could not be loaded (reported by /ready), else None."""
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = (
            EventListener(client, prefix, self._on_event, on_connect=self.sync)
            if client is not None
            else None
        )
        self._poller = threading.Thread(target=self._poll, name="follow-poll", daemon=True)

    def start(self) -> Follower:
        self.sync()
        if self._listener is not None:
            self._listener.start()
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.stop()
        self._poller.join(5)

    def sync(self) -> str:
        """Switch to the store's active version if it moved; return the version served."""
        with self._sync_lock:
            try:
                active = self.store.active_version()
                if active != self.runtime.active:
                    self.runtime.set_active(active)
                self.error = None
            except Exception as exc:  # keep serving the last good version
                message = f"cannot serve the active version: {exc}"
                if message != self.error:
                    log.error(message)
                self.error = message
            return self.runtime.active

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("committed", "active_changed"):
            self.sync()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.sync()
