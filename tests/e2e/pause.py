"""The test's side of the worker's pause point (``app/worker/testing_hooks.py``).

A test starts a worker with :meth:`PausePoints.env`, waits until the worker reports a stage
(:meth:`PausePoints.wait`), and then kills it there or lets it go (:meth:`release`,
:meth:`resume`). Nothing is timed: every step follows what the worker reported.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.worker.testing_hooks import PAUSE_AT_ENV, PAUSE_DIR_ENV
from tests.e2e.harness import Proc, wait_for


@dataclass(frozen=True)
class PausePoints:
    """One worker process's pause directory and the stages it stops at."""

    directory: Path
    stages: tuple[str, ...]

    @classmethod
    def create(cls, root: Path, *stages: str) -> PausePoints:
        directory = root / f"pauses-{uuid.uuid4().hex[:8]}"
        directory.mkdir(parents=True)
        return cls(directory, stages)

    def env(self) -> dict[str, str]:
        """The environment that makes a worker stop at :attr:`stages`."""
        return {PAUSE_AT_ENV: ",".join(self.stages), PAUSE_DIR_ENV: str(self.directory)}

    def reached(self, stage: str, n: int = 1) -> dict[str, Any] | None:
        """What the worker wrote when it reached ``stage`` for the ``n``-th time, or None."""
        path = self.directory / f"{stage}.{n}.reached"
        return json.loads(path.read_text()) if path.exists() else None

    def wait(self, stage: str, n: int, proc: Proc, timeout: float = 300,
             unless: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
        """Wait until ``proc`` is paused at ``stage`` for the ``n``-th time; None if ``unless``
        became true first (e.g. every job finished, so no pause will come)."""

        def arrived() -> dict[str, Any] | bool:
            assert proc.alive(), f"{proc.name} died before {stage} #{n}:\n{proc.log()}"
            return self.reached(stage, n) or unless()

        got = wait_for(arrived, timeout, f"the worker to reach {stage} #{n}")
        return got if isinstance(got, dict) else None

    def release(self, stage: str, n: int = 1) -> None:
        """Let the worker go on from its ``n``-th pause at ``stage``."""
        (self.directory / f"{stage}.{n}.release").touch()

    def resume(self) -> None:
        """Let the worker go on, now and at every later stage."""
        (self.directory / "resume").touch()
