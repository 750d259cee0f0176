"""The API process's generation loop: one thread steps the batch engine for every request.

Requests from any number of HTTP handlers are queued here; a single background thread
admits them into :class:`models.generate.BatchEngine` and steps it, so all requests in
flight share each forward pass whatever versions they name. The policy lives here:

- **queue bound**: more than ``max_queue`` requests waiting or running is refused at once
  (:class:`QueueFull`, which the API turns into 429 with ``Retry-After``), rather than
  letting latency grow without limit;
- **collection window**: a request that arrives while the loop is idle starts at once when
  it is alone (a lone client pays no wait); when the loop was busy a moment ago, it waits up
  to ``window_s`` for others, so a burst shares its prefill pass. Under load the window is
  the forward pass itself: whatever arrived during a step joins the next one;
- **versions**: each request carries its version's additions, resolved when the request is
  accepted (``active`` is read once), so a rollback mid-generation does not change the
  version a request is answered by;
- **model state**: each step holds the runtime's read lock with the model at the base
  weights (an export may have merged a version meanwhile; then the step restores the base
  first), so no step sees a half-switched model and no request takes the write lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from app.metrics import EngineMetrics
from app.serving.additive import AdditiveRuntime
from models.generate import BatchEngine, Request

log = logging.getLogger(__name__)


STOPPING = "the service is stopping; retry shortly"


class QueueFull(RuntimeError):
    """Too many requests in flight; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(ValueError):
    """One call asks for more rows than the bound: it can never be admitted (not a retry)."""


class EngineStopped(RuntimeError):
    """The engine is stopping or its thread is gone: nothing new is admitted."""


class ServingEngine:
    """A background thread that batches every query of this API process."""

    def __init__(self, runtime: AdditiveRuntime, max_queue: int = 256, max_rows: int = 64,
                 window_s: float = 0.005, registry: CollectorRegistry | None = None,
                 prefix_tokens: int = 4096):
        self.runtime = runtime
        self.batch = BatchEngine(runtime.lm.model, runtime.lm.tokenizer, max_rows=max_rows,
                                 prefix_tokens=prefix_tokens)
        """The rows being generated; this object owns its thread, admission and metrics."""
        self.max_queue = max_queue
        self.window_s = window_s
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="generate-loop", daemon=True)
        self._busy_until = 0.0
        self._drain_deadline: float | None = None
        self.by_version: Counter[str] = Counter()
        self.metrics = EngineMetrics(
            registry, queue_depth=lambda: self.batch.pending,
            rows=lambda: len(self.batch.running), in_flight=lambda: self._in_flight,
        ) if registry is not None else None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> ServingEngine:
        self._thread.start()
        return self

    def drain(self, grace_s: float) -> None:
        """Refuse new requests from now on (:class:`EngineStopped`); what is in flight may
        finish within ``grace_s``, and is then ended with an error saying the service is
        stopping (each release counted). Called again, the shorter grace wins."""
        deadline = time.monotonic() + max(0.0, grace_s)
        with self._cond:
            self._drain_deadline = min(self._drain_deadline or deadline, deadline)
            self._cond.notify_all()

    @property
    def draining(self) -> bool:
        return self._drain_deadline is not None

    def _drain_due(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def stop(self) -> None:
        """Refuse new requests, let the loop end, and finish what is left with an error (each
        release counted, so the in-flight count ends at zero)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(10)
        self.batch.fail_all("the service is shutting down")

    # -- intake -------------------------------------------------------------------------
    def resolve(self, version: str | None) -> str:
        """The version a request is answered by: ``active`` (or none) is read now, once."""
        return self.runtime.active if version in (None, "", "active") else str(version)

    def submit(self, version: str, requests: Sequence[Request]) -> None:
        """Queue ``requests`` on ``version``'s weights, all or none.

        Raises :class:`EngineStopped`, :class:`TooLarge`, :class:`QueueFull`, ``ValueError``
        (a request with no prompt token) or what building the version's additions raises (an
        unusable delta). Rows are counted only once the engine holds them, under the same lock
        the release takes, so no failure leaves a row counted and every finish (success,
        error, cancellation, shutdown) releases it exactly once.
        """
        if not self.alive:
            raise EngineStopped(STOPPING)
        if len(requests) > self.max_queue:
            raise TooLarge(f"this request asks for {len(requests)} generations (prompts x n); "
                           f"this server runs at most {self.max_queue} at once")
        additions = self.runtime.additions(version)
        with self._cond:
            if self._in_flight + len(requests) > self.max_queue:
                raise QueueFull(f"{self._in_flight} requests are in flight (the bound is "
                                f"{self.max_queue}); retry shortly")
            for request in requests:
                request.additions = additions
                self._track(request)
            self.batch.add_all(requests)  # raises with nothing queued
            self._in_flight += len(requests)
            self.by_version[version] += len(requests)
            if self.metrics is not None:
                self.metrics.accepted(version == self.runtime.active, len(requests))
            self._cond.notify_all()

    def _track(self, request: Request) -> None:
        """Count the request out of the bound when it finishes (once), then call its hook."""
        hook = request.on_update
        released = False
        observe = self.metrics.watch(request) if self.metrics is not None else None

        def on_update(r: Request) -> None:
            nonlocal released
            if observe is not None:
                observe(r)
            if r.finished:
                with self._cond:
                    if not released:
                        released = True
                        self._in_flight -= 1
            if hook is not None:
                try:  # a caller's failing hook (its event loop closed) fails nobody else
                    hook(r)
                except Exception:  # noqa: BLE001
                    log.exception("a request's update hook failed")

        request.on_update = on_update

    @property
    def alive(self) -> bool:
        """The loop thread runs and is not stopping: a submitted request will be answered."""
        return self._thread.is_alive() and not self._stop.is_set() and not self.draining

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- the loop -----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self.batch.has_work() and not self._stop.is_set():
                    self._cond.wait(0.5)
            if self._stop.is_set():
                return
            try:
                if not self.batch.running and time.monotonic() < self._busy_until:
                    self._collect()
                with self.runtime.serving(self.runtime.base_id):
                    if self._drain_due():
                        self.batch.fail_all(STOPPING)
                        continue
                    rows = self.batch.step()
            except Exception as exc:  # a bug must not hang every waiting client
                log.exception("generation step failed")
                self.batch.fail_all(f"generation failed: {type(exc).__name__}")
                continue
            if rows > 1:
                self._busy_until = time.monotonic() + 1.0

    def _collect(self) -> None:
        """Wait up to ``window_s`` for more requests to join the first prefill."""
        deadline = time.monotonic() + self.window_s
        with self._cond:
            while self.batch.pending < self.batch.max_rows and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)
