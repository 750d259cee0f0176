"""``python -m app serve`` with no Redis configured: it starts an embedded one, runs API and
worker, edits work, and Ctrl-C (SIGINT) leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.harness import Service, wait_job, wait_ready


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_serve_embedded_redis_and_clean_stop(tiny_service: Service) -> None:
    serve = tiny_service.start("serve", REDIS_URL="")
    status = wait_ready(serve)
    assert status["worker"] and status["redis"]
    assert (tiny_service.data_dir / "redis").is_dir(), "an embedded Redis in the data dir"
    tree = descendants(serve.popen.pid)
    assert len(tree) >= 3, tree  # api, worker, redis

    with httpx.Client(base_url=serve.url, timeout=60) as client:
        response = client.post("/edits", json={"facts": [
            {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
             "target_new": "English"}]})
        assert response.status_code == 202
        job = wait_job(client, response.json()["job_id"])
        assert job["state"] == "committed", job

    started = time.monotonic()
    assert serve.stop(signal.SIGINT) == 0, serve.log()
    stop_s = time.monotonic() - started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.1)
    assert not [p for p in tree if alive(p)], f"orphans after Ctrl-C:\n{serve.log()}"
    assert stop_s < 20
    assert not list((tiny_service.data_dir / "redis").glob("*.sock"))
