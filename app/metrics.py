"""Engine and worker metrics for ``/metrics`` (prometheus-client), with bounded labels.

No label takes one value per version, job or request: a label's values are fixed by the code
(``served``: ``active`` or ``other``; ``state``: the job states; ``stage``: the editor's stages),
so the number of series stays constant however many versions a service makes.

- **Engine** (:class:`EngineMetrics`, one per API process): queries by ``served``, time to
  first token, request duration, generated tokens (``rate()`` of the counter is tokens/s) and
  each request's decode rate; queue depth (requests waiting to enter the batch), in-flight rows
  (sequences in the batch) and in-flight requests, read at scrape time.
- **Worker** (:class:`WorkerCollector`): jobs by state, read from the store at scrape time (so
  every API process reports the same, whichever process ran the jobs), and the duration of each
  stage of the edits committed since this process started (the worker stores them with each
  version: ``templates``, ``stats``, ``targets``, ``solve``, ``compute``, ``gate``, ...).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.store import VersionStore
    from models.generate import Request

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
SERVED = ("active", "other")
"""The ``served`` label: the version active when the query was accepted, or another one."""


class EngineMetrics:
    """What the serving engine reports; the gauges call the given readers at scrape time."""

    def __init__(self, registry: CollectorRegistry, queue_depth: Callable[[], int],
                 rows: Callable[[], int], in_flight: Callable[[], int]):
        self.requests = Counter(
            "modeledit_generation_requests", "queries accepted by the batch engine, by whether "
            "they asked the active version", ["served"], registry=registry)
        for served in SERVED:
            self.requests.labels(served=served)
        self.ttft = Histogram(
            "modeledit_generation_time_to_first_token_seconds",
            "from a query's acceptance to its first generated token", buckets=TTFT_BUCKETS,
            registry=registry)
        self.duration = Histogram(
            "modeledit_generation_request_seconds", "from a query's acceptance to its end",
            buckets=TTFT_BUCKETS, registry=registry)
        self.tokens = Counter(
            "modeledit_generation_tokens", "tokens generated (rate() of it: tokens/s)",
            registry=registry)
        self.decode_rate = Histogram(
            "modeledit_generation_tokens_per_second",
            "a finished query's tokens after the first per second after the first",
            buckets=TOKENS_PER_S_BUCKETS, registry=registry)
        registry.register(_EngineGauges(queue_depth, rows, in_flight))

    def accepted(self, active: bool, count: int) -> None:
        self.requests.labels(served=SERVED[0] if active else SERVED[1]).inc(count)

    def watch(self, request: Request) -> Callable[[Request], None]:
        """An ``on_update`` observer for ``request`` (accepted now): first token, end, tokens."""
        started = time.perf_counter()
        first: list[float] = []

        def observe(r: Request) -> None:
            now = time.perf_counter()
            if r.output_ids and not first:
                first.append(now)
                self.ttft.observe(now - started)
            if r.finished:
                self.duration.observe(now - started)
                self.tokens.inc(len(r.output_ids))
                if first and len(r.output_ids) > 1 and now > first[0]:
                    self.decode_rate.observe((len(r.output_ids) - 1) / (now - first[0]))

        return observe


class _EngineGauges(Collector):
    """Read at scrape time, so never stale."""

    def __init__(self, queue_depth: Callable[[], int], rows: Callable[[], int],
                 in_flight: Callable[[], int]):
        self.read = {"queue_depth": (queue_depth, "queries waiting to enter the batch"),
                     "rows_in_flight": (rows, "sequences in the running batch"),
                     "requests_in_flight": (in_flight, "queries accepted and not finished "
                                                       "(waiting or running)")}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (read, text) in self.read.items():
            yield GaugeMetricFamily(f"modeledit_generation_{name}", text, value=read())


class WorkerCollector(Collector):
    """Jobs by state and the stage durations of committed edits, read from the store."""

    def __init__(self, store: VersionStore, job_states: tuple[str, ...]):
        self.store = store
        self.job_states = job_states
        self._lock = threading.Lock()
        self._seen = {v.id for v in store.list_versions()}  # counted from this process's start
        self._stages: dict[str, _Buckets] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        try:
            counts = self.store.count_jobs_by_state()
            self._observe_new_versions()
        except Exception:  # a scrape must not fail because SQLite hiccups
            return
        jobs = GaugeMetricFamily("modeledit_jobs", "edit jobs in the store, by state",
                                 labels=["state"])
        for state in self.job_states:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        stages = HistogramMetricFamily(
            "modeledit_worker_stage_seconds", "duration of each stage of the edits the worker "
            "committed since this process started", labels=["stage"])
        with self._lock:
            for stage, buckets in sorted(self._stages.items()):
                stages.add_metric([stage], buckets.cumulative(), buckets.total)
        yield stages

    def _observe_new_versions(self) -> None:
        with self._lock:
            for version in self.store.list_versions():
                if version.id in self._seen:
                    continue
                self._seen.add(version.id)
                for key, value in (version.timings or {}).items():
                    if key.endswith("_s") and isinstance(value, int | float):
                        self._stages.setdefault(key[:-2], _Buckets()).add(float(value))


class _Buckets:
    """A histogram's counts per bucket and sum (constant memory however many edits)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(STAGE_BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def add(self, value: float) -> None:
        index = next((i for i, le in enumerate(STAGE_BUCKETS) if value <= le), len(STAGE_BUCKETS))
        self.counts[index] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count of values <= le)`` pairs ending with ``+Inf``."""
        bounds = [str(float(le)) for le in STAGE_BUCKETS] + ["+Inf"]
        running, pairs = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            pairs.append((bound, float(running)))
        return pairs
