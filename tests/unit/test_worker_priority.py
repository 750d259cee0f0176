"""The worker yields the CPU to queries: every thread of its process, those started before the
call (as an import's thread pool) and after it, runs at the lowered priority."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, threading
    from pathlib import Path
    from app.services import yield_cpu_to_queries

    gate = threading.Event()
    def wait():
        gate.wait()
    before = threading.Thread(target=wait); before.start()
    yield_cpu_to_queries({nice})
    after = threading.Thread(target=wait); after.start()
    for task in sorted(Path("/proc/self/task").iterdir()):
        print(os.getpriority(os.PRIO_PROCESS, int(task.name)))
    gate.set()
""")


def niceness(nice: int) -> list[int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(nice=nice)], capture_output=True,
                         text=True, check=True, timeout=120)
    return [int(line) for line in out.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_every_thread_of_the_process_is_lowered() -> None:
    base = niceness(0)
    assert len(base) >= 3  # the main thread and the two started around the call
    lowered = niceness(7)
    assert lowered == [min(19, n + 7) for n in base]
