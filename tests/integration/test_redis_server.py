"""Finding or starting Redis: real servers, real processes, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from app.queue.redis_server import RedisStartError, ensure_redis, redis_answers
from tests.e2e.harness import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHARED_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pid: int, what: str, timeout: float = 10.0) -> None:
    wait_for(lambda: gone(pid), timeout, what)


def test_uses_the_given_url_when_it_answers(tmp_path: Path) -> None:
    if not redis_answers(SHARED_URL):
        pytest.skip(f"no Redis at {SHARED_URL}")
    handle = ensure_redis(SHARED_URL, tmp_path)
    assert (handle.url, handle.embedded, handle.owned) == (SHARED_URL, False, False)
    assert handle.client().ping()
    handle.stop()  # must not stop a server we do not own
    assert redis_answers(SHARED_URL)
    assert not (tmp_path / "redis").exists()


def test_unreachable_url_falls_back_or_raises(tmp_path: Path) -> None:
    with pytest.raises(RedisStartError, match="does not answer"):
        ensure_redis(DEAD_URL, tmp_path, fallback=False)
    with ensure_redis(DEAD_URL, tmp_path) as handle:
        assert handle.embedded and handle.owned
        assert handle.client().ping()


def test_embedded_starts_fast_and_persists_across_restart(tmp_path: Path) -> None:
    handle = ensure_redis(None, tmp_path)
    assert handle.embedded and handle.owned and handle.url.startswith("unix://")
    assert handle.start_s < 1.0, f"start took {handle.start_s:.3f} s"
    client = handle.client()
    client.set("fact", "Paris")
    client.xadd("modeledit:edits", {"job_id": "j1"})
    client.close()
    first_pid = handle.pid
    handle.stop()
    wait_gone(first_pid, f"the stopped Redis {first_pid} to exit")
    assert not redis_answers(handle.url)
    assert list((tmp_path / "redis").glob("appendonlydir/*"))  # append-only files on disk

    again = ensure_redis(None, tmp_path)
    assert again.pid != first_pid
    client = again.client()
    assert client.get("fact") == b"Paris"
    assert client.xlen("modeledit:edits") == 1
    client.close()
    again.stop()


def test_second_user_shares_the_server(tmp_path: Path) -> None:
    with ensure_redis(None, tmp_path) as owner:
        user = ensure_redis(None, tmp_path)
        assert user.url == owner.url and user.embedded and not user.owned
        user.stop()  # not the owner: the server keeps running
        assert owner.alive()
    assert not user.alive()


_PARENT = """
import sys, time
from app.queue.redis_server import ensure_redis
handle = ensure_redis(None, sys.argv[1])
print(handle.pid, handle.url, flush=True)
if sys.argv[2] == "sleep":
    time.sleep(60)
"""


def _start_parent(data_dir: Path, mode: str) -> tuple[subprocess.Popen[str], int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PARENT), str(data_dir), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().split()
    assert len(line) == 2, proc.stderr.read()
    return proc, int(line[0]), line[1]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_server_dies_with_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    proc, pid, url = _start_parent(tmp_path, "sleep")
    assert redis_answers(url) and not gone(pid)
    proc.send_signal(sig)
    proc.wait(10)
    wait_gone(pid, f"embedded Redis {pid} to exit with its parent ({sig.name})")
    assert not redis_answers(url)


def test_server_stops_when_the_parent_exits_normally(tmp_path: Path) -> None:
    proc, pid, url = _start_parent(tmp_path, "exit")
    assert proc.wait(10) == 0
    wait_gone(pid, f"embedded Redis {pid} to exit with its parent")
    assert not redis_answers(url)


def test_server_outlives_the_thread_that_started_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* exits: start from a pooled thread."""
    handles = []
    tids: list[int] = []

    def start() -> None:
        tids.append(threading.get_native_id())
        handles.append(ensure_redis(None, tmp_path))

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    # join() returns before the kernel has reaped the thread; the death signal, if any, is
    # sent when it has. So wait for that, then give the signal a moment to act: what this
    # checks is an absence, so a short look after the observed exit is all there is to do.
    wait_for(lambda: not Path(f"/proc/self/task/{tids[0]}").exists(), 10,
             "the starting thread to exit")
    time.sleep(0.3)
    assert handles and handles[0].alive()
    handles[0].stop()


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    sock_path = tmp_path / "redis" / "redis.sock"
    sock_path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))  # a socket file nobody listens on, as a crash leaves it
    stale.close()
    with ensure_redis(None, tmp_path) as handle:
        assert handle.owned and handle.client().ping()


def test_long_data_dir_gets_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with ensure_redis(None, deep) as handle:
        assert handle.socket_path is not None and len(str(handle.socket_path)) <= 100
        assert handle.client().ping()
        assert ensure_redis(None, deep).url == handle.url  # every process finds the same one


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server on PATH")
def test_redis_server_from_path(tmp_path: Path) -> None:
    with ensure_redis(None, tmp_path, binary=shutil.which("redis-server")) as handle:
        info = handle.client().info("server")
        assert "redis_version" in info and handle.start_s < 1.0


def test_missing_binary_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RedisStartError, match="exited"):
        ensure_redis(None, tmp_path, binary="/bin/false")
