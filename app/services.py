"""The composition root: the one place that builds a process's parts and wires them together.

:func:`build_services` makes what an API process holds (settings, store, Redis, queue, model
runtime, follower, metrics), built once in the app's lifespan and reached by routers through
``Depends`` (see :mod:`app.api.deps`); :func:`build_worker` makes the editor worker (queue,
editor lock, job runner, quality gate). Tests build the same objects, and nothing reads globals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from app.api.metrics import Metrics
from app.queue import EditorLock, EditQueue, RateLimiter, is_alive
from app.queue.redis_server import RedisHandle, ensure_redis
from app.serving.additive import AdditiveRuntime
from app.serving.delta_source import DeltaSource
from app.serving.engine import ServingEngine
from app.serving.follow import Follower
from app.serving.parts import ModelParts, load_parts
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from app.store import VersionStore
from app.vllm.service import VllmServing, build_vllm
from app.worker.gate import GateThresholds, QualityGate
from app.worker.handlers import Editors, JobRunner, base_hparams
from app.worker.loop import Worker

log = logging.getLogger(__name__)

__all__ = ["ModelParts", "Services", "build_services", "build_worker", "connect_redis",
           "load_parts", "run_worker"]


def connect_redis(settings: Settings) -> tuple[RedisHandle, redis.Redis]:
    # `api` and `worker` run as separate processes: if each fell back to its own embedded
    # server when the configured Redis is down, they would not share a queue. Only `serve`
    # (which passes its own Redis to both) falls back; here a configured URL must answer.
    handle = ensure_redis(settings.redis_url, settings.data_path, fallback=not settings.redis_url)
    client = handle.client(socket_timeout=5, socket_connect_timeout=2,
                           health_check_interval=10)
    return handle, client


@dataclass
class Services:
    settings: Settings
    parts: ModelParts
    redis: RedisHandle
    client: redis.Redis
    queue: EditQueue
    rate_limiter: RateLimiter | None
    follower: Follower
    metrics: Metrics = field(default_factory=Metrics)
    vllm: VllmServing | None = None
    """With MODELEDIT_VLLM_URL: vLLM serves the versions (app/vllm/)."""
    startup_s: float = 0.0

    @property
    def store(self) -> VersionStore:
        return self.parts.store

    @property
    def runtime(self) -> ModelRuntime:
        return self.parts.runtime

    @property
    def engine(self) -> ServingEngine | None:
        return self.parts.engine

    @property
    def deltas(self) -> DeltaSource:
        return self.parts.deltas

    def redis_ok(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    def worker_alive(self) -> bool:
        return is_alive(self.client, self.settings.redis_prefix)

    def queue_length(self) -> int | None:
        try:
            return self.queue.length()
        except (redis.RedisError, OSError):
            return None

    def state(self) -> dict[str, Any]:
        """Gauges for /metrics."""
        state: dict[str, Any] = {
            "unfinished_jobs": self.store.count_unfinished(),
            "versions": len(self.store.list_versions()),
            "version_switches": self.runtime.switches,
            "version": self.runtime.active,
            "model": self.parts.lm.name,
            "worker_alive": int(self.worker_alive()),
        }
        length = self.queue_length()
        if length is not None:
            state["queue_length"] = length
        return state

    def close(self) -> None:
        if self.vllm is not None:
            self.vllm.close()
        self.follower.stop()
        if self.engine is not None:
            self.engine.stop()
        with contextlib.suppress(Exception):
            self.client.close()
        self.redis.stop()
        self.store.close()


def build_services(settings: Settings, metrics: Metrics | None = None) -> Services:
    """Everything the API needs, in start order: Redis, model + store, follower."""
    started = time.perf_counter()
    handle, client = connect_redis(settings)
    parts = load_parts(settings, AdditiveRuntime)
    queue = EditQueue(client, settings.redis_prefix)
    with contextlib.suppress(redis.RedisError, OSError):
        queue.ensure_group()
    follower = Follower(parts.store, parts.runtime, client, settings.redis_prefix,
                        settings.follow_poll_s)
    services = Services(
        settings=settings,
        parts=parts,
        redis=handle,
        client=client,
        queue=queue,
        rate_limiter=RateLimiter(client, settings.redis_prefix),
        follower=follower,
        metrics=metrics or Metrics(),
        vllm=build_vllm(settings, parts),
    )
    follower.start()
    assert isinstance(parts.runtime, AdditiveRuntime)
    parts.engine = ServingEngine(
        parts.runtime, settings.generate_queue, settings.generate_max_rows,
        settings.generate_window_ms / 1000, services.metrics.registry,
        prefix_tokens=settings.prefix_tokens).start()
    services.metrics.watch(services.state)
    services.metrics.watch_worker(parts.store)
    services.startup_s = time.perf_counter() - started
    log.info("API ready in %.2fs (model %s, serving %s)", services.startup_s, parts.lm.name,
             parts.runtime.active)
    return services


def build_worker(settings: Settings, parts: ModelParts, client: redis.Redis) -> Worker:
    """The editor worker on ``parts``: its queue, editor lock, job runner and quality gate."""
    prefix = settings.redis_prefix
    lock = EditorLock(client, prefix, ttl_s=settings.lock_ttl_s)
    editors = Editors(parts.lm, base_hparams(parts.lm, settings.hparams))
    runner = JobRunner(
        parts.store, parts.runtime, parts.deltas, editors,
        default_method=settings.method, shared_data=settings.shared_data,
        before_commit=lock.check,
        gate=QualityGate(parts.runtime, GateThresholds(
            settings.gate_min_efficacy, settings.gate_max_kl, settings.gate_min_chat_efficacy),
            parts.store),
    )
    return Worker(settings, parts, client, EditQueue(client, prefix), lock, runner)


def yield_cpu_to_queries(nice: int) -> None:
    """Lower this process's CPU priority by ``nice``: each of its threads on Linux, where
    niceness is per thread (threads started later inherit it). The worker and the API share the
    machine's cores: at equal priority an edit's z optimisation takes about half of them from
    the queries for as long as it runs, while a query's client waits and an edit's does not."""
    if nice <= 0:
        return
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():  # not Linux: one call covers the process
        if hasattr(os, "nice"):
            os.nice(nice)
        return
    for task in tasks.iterdir():  # threads started by imports (OpenMP's pool) too
        tid = int(task.name)
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def run_worker(settings: Settings) -> None:
    """Entry point of ``python -m app worker``."""
    started = time.perf_counter()
    yield_cpu_to_queries(settings.worker_nice)
    handle, client = connect_redis(settings)
    parts = load_parts(settings)
    worker = build_worker(settings, parts, client)
    worker.runner.warm()  # before the worker's heartbeat: /ready waits for it
    worker.install_signals()
    log.info("worker ready in %.2fs (model %s)", time.perf_counter() - started, parts.lm.name)
    try:
        worker.run()
    finally:
        client.close()
        handle.stop()
        parts.store.close()
