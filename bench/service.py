"""Launch the real service (``python -m app api|worker|serve``) as subprocesses: for the
benchmarks that need a service of their own (``bench.load``, ``bench.openai_load``) and for
the end-to-end tests (``tests/e2e/harness.py`` builds on it).

Real Redis (``MODELEDIT_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``) under a unique
key prefix per service, a temporary data directory, real HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("MODELEDIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TINY_HPARAMS = {"stats_samples": 50, "z_steps": 10, "covariance_weight": 10.0}
"""Fast and effective enough on the random tiny model (the preset's λ=15000 would swamp
its small keys)."""


class NoRedis(RuntimeError):
    """No Redis answers at :data:`REDIS_URL`."""


def redis_client() -> redis.Redis:
    """A client of the Redis the launched services use; :class:`NoRedis` when none answers."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise NoRedis(f"no Redis at {REDIS_URL}: run scripts/ensure-test-redis.sh or set "
                      "MODELEDIT_TEST_REDIS_URL") from exc
    return client


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(path: Path) -> Path:
    """The repo's tiny random llama + BPE tokenizer as a checkpoint ``--model`` can load."""
    from bench.tiny import tiny_model, tiny_tokenizer

    if not (path / "config.json").exists():
        tiny_model().save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.alive():
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@dataclass
class Service:
    """One service (data dir + Redis prefix) whose processes a test starts and stops."""

    root: Path
    model: str
    prefix: str = field(default_factory=unique_prefix)
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELEDIT_")}
        env.update({
            "PYTHONPATH": str(REPO),
            "REDIS_URL": REDIS_URL,
            "MODELEDIT_DATA_DIR": str(self.data_dir),
            "MODELEDIT_MODEL": self.model,
            "MODELEDIT_REDIS_PREFIX": self.prefix,
            "MODELEDIT_FOLLOW_POLL_S": "0.5",
            "MODELEDIT_HEARTBEAT_S": "0.5",
            "MODELEDIT_WORKER_BLOCK_MS": "200",
            "MODELEDIT_LOG_LEVEL": "info",
        })
        for name in ("MODELEDIT_SHARED_DATA", "MODELEDIT_CACHE_DIR"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(self.extra_env)
        env.update(extra)
        return env

    def start(self, command: str, *args: str, port: int | None = None, **env: str) -> Proc:
        port = port or (free_port() if command in ("api", "serve") else None)
        argv = [sys.executable, "-m", "app", command, *args]
        if port is not None:
            argv += ["--port", str(port)]
        log_path = self.root / f"{command}-{len(self.procs)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(argv, cwd=REPO, env=self.env(**env), stdout=log,
                                     stderr=subprocess.STDOUT)
        proc = Proc(command, popen, log_path, f"http://127.0.0.1:{port}" if port else None)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.stop()
        self.procs = [p for p in self.procs if p.alive()]


def wait_ready(proc: Proc, timeout: float = 300, worker: bool = True) -> dict[str, Any]:
    """Poll ``/ready`` until it answers (and reports a live worker when ``worker``)."""
    assert proc.url is not None
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            response = httpx.get(proc.url + "/ready", timeout=10)
            last = response.json()
            if response.status_code == 200 or (not worker and last.get("version")):
                return last
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{proc.name} not ready after {timeout}s: {last}\n{proc.log()}")


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true, and return that. ``timeout`` only
    catches a hang, so it is generous: a loaded machine must not fail a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running(service: Service) -> Iterator[Service]:
    """Yield ``service``; afterwards kill its processes and delete its Redis keys."""
    client = redis_client()
    try:
        yield service
    finally:
        for proc in service.procs:
            proc.kill()
        delete_prefix(client, service.prefix)
        client.close()
