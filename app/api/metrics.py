"""Prometheus metrics of one API process, on a registry of its own.

A registry per app (not the global one) lets tests create several apps in one process
without duplicate-metric errors. No label takes a value per version (the served version is a
gauge's value); the engine's and the worker's metrics are in :mod:`app.metrics`. Gauges that describe shared state (queue length, unfinished
jobs, the version served) are read at scrape time, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from app.metrics import WorkerCollector
from app.store import VersionStore
from app.store.records import JOB_STATES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, float | str]]):
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        try:
            state = self.read()
        except Exception:  # a scrape must not fail because Redis or SQLite hiccups
            return
        for name in ("queue_length", "unfinished_jobs", "versions", "version_switches",
                     "worker_alive"):
            if name in state:
                yield GaugeMetricFamily(f"modeledit_{name}", name.replace("_", " "),
                                        value=float(state[name]))
        number = _version_number(str(state.get("version", "")))
        if number is not None:  # a number, not a label: one series whatever the version
            yield GaugeMetricFamily("modeledit_served_version",
                                    "the version this API process serves (v3: 3)", value=number)
        info = InfoMetricFamily("modeledit_model", "the model this API process serves")
        info.add_metric([], {"model": str(state.get("model", ""))})
        yield info


def _version_number(version: str) -> float | None:
    digits = version.removeprefix("v")
    return float(digits) if digits.isdigit() else None


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "modeledit_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modeledit_http_request_seconds", "HTTP request latency", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.edits_submitted = Counter(
            "modeledit_edit_jobs_submitted", "edit jobs accepted (new, not idempotent repeats)",
            registry=self.registry,
        )
        self.facts_submitted = Counter(
            "modeledit_facts_submitted", "facts in accepted edit jobs", registry=self.registry
        )
        self.rejected = Counter(
            "modeledit_rejected", "requests refused by back-pressure", ["reason"],
            registry=self.registry,
        )

    def watch(self, read: Callable[[], dict[str, float | str]]) -> None:
        self.registry.register(_StateCollector(read))

    def watch_worker(self, store: VersionStore) -> None:
        """Jobs by state and the worker's stage durations (:mod:`app.metrics`), from ``store``."""
        self.registry.register(WorkerCollector(store, JOB_STATES))
