"""A pause point for fault tests: the worker stops at a named stage until the test lets it go.

Why: a test that kills the worker "while it edits" cannot time the kill from outside; on a
tiny model the job may already have committed when the signal lands. With a pause point the
test waits until the worker *says* it is at the stage, then kills or releases it, so where the
kill lands holds by construction.

Off unless a test sets ``MODELEDIT_TEST_PAUSE_AT``: :func:`pause_point` is then one
environment lookup and returns. When set (a comma-separated list of stages), it also needs
``MODELEDIT_TEST_PAUSE_DIR``, a directory the test owns. The ``n``-th time this process
reaches a listed stage it

1. writes ``<dir>/<stage>.<n>.reached`` (JSON: stage, n, pid, job; written atomically), then
2. blocks until ``<dir>/<stage>.<n>.release`` or ``<dir>/resume`` exists (``resume`` turns
   every later pause off), or the test kills the process.

A pause nobody releases within ``MODELEDIT_TEST_PAUSE_TIMEOUT_S`` (default 300) raises, so a
forgotten test fails the job with a reason instead of hanging the worker.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

PAUSE_AT_ENV = "MODELEDIT_TEST_PAUSE_AT"
PAUSE_DIR_ENV = "MODELEDIT_TEST_PAUSE_DIR"
PAUSE_TIMEOUT_ENV = "MODELEDIT_TEST_PAUSE_TIMEOUT_S"

RUNNING = "running"
"""The job is marked running (store and heartbeat); its edit is about to start."""
COMMIT = "commit"
"""The edit is computed and gated; the version is not written yet (before the lock check)."""
STAGES = (RUNNING, COMMIT)

_reached: Counter[str] = Counter()


def pause_point(stage: str, job: str | None = None) -> None:
    """Block at ``stage`` if a test asked for it; otherwise return at once."""
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted:
        return
    if stage in {s.strip() for s in wanted.split(",")}:
        _pause(stage, job)


def _pause(stage: str, job: str | None) -> None:
    folder = os.environ.get(PAUSE_DIR_ENV)
    if not folder:
        raise RuntimeError(f"{PAUSE_AT_ENV} is set but {PAUSE_DIR_ENV} is not: set both")
    directory = Path(folder)
    resume = directory / "resume"
    if resume.exists():
        return
    _reached[stage] += 1
    n = _reached[stage]
    marker = directory / f"{stage}.{n}.reached"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stage": stage, "n": n, "pid": os.getpid(), "job": job}))
    os.replace(tmp, marker)
    release = directory / f"{stage}.{n}.release"
    deadline = time.monotonic() + float(os.environ.get(PAUSE_TIMEOUT_ENV, "300"))
    while not (release.exists() or resume.exists()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"test pause at {stage} #{n} was not released in time")
        time.sleep(0.01)
