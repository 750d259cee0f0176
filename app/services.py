"""What an API process holds: settings, store, Redis, queue, model runtime, follower, metrics.

Built once in the app's lifespan and reached by routers through ``Depends`` (see
:mod:`app.deps`), so tests can build the same objects and nothing reads globals.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from app.deltas import DeltaSource
from app.follow import Follower
from app.metrics import Metrics
from app.queue import EditQueue, RateLimiter, is_alive
from app.redis_server import RedisHandle, ensure_redis
from app.runtime import ModelRuntime
from app.settings import Settings
from app.store import VersionStore
from app.vllm.service import VllmServing, build_vllm
from editing.fingerprint import model_fingerprint
from models.device_map import parse_device_map
from models.load import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass
class ModelParts:
    """The model, its versions and the runtime serving them (shared by API and worker)."""

    lm: LoadedModel
    store: VersionStore
    deltas: DeltaSource
    runtime: ModelRuntime
    load_s: float


def load_parts(settings: Settings) -> ModelParts:
    """Load the model once, open the store, and register the base version."""
    started = time.perf_counter()
    store = VersionStore(settings.data_path)
    lm = load_model(settings.model, settings.device, settings.dtype,
                    device_map=parse_device_map(settings.device_map))
    fingerprint = model_fingerprint(lm.model)
    base = store.ensure_base(lm.name, fingerprint)
    deltas = DeltaSource(store, lm.model, fingerprint)
    runtime = ModelRuntime(lm, base.id, deltas.chain)
    return ModelParts(lm, store, deltas, runtime, time.perf_counter() - started)


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
    started_at: float = field(default_factory=time.time)
    startup_s: float = 0.0

    @property
    def store(self) -> VersionStore:
        return self.parts.store

    @property
    def runtime(self) -> ModelRuntime:
        return self.parts.runtime

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
        with contextlib.suppress(Exception):
            self.client.close()
        self.redis.stop()
        self.store.close()


def build_services(settings: Settings, metrics: Metrics | None = None) -> Services:
    """Everything the API needs, in start order: Redis, model + store, follower."""
    started = time.perf_counter()
    handle, client = connect_redis(settings)
    parts = load_parts(settings)
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
    services.metrics.watch(services.state)
    services.startup_s = time.perf_counter() - started
    log.info("API ready in %.2fs (model %s, serving %s)", services.startup_s, parts.lm.name,
             parts.runtime.active)
    return services
