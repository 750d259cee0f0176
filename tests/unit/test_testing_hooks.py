"""The worker's test-only pause point: off without its variable, and a real stop with it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from app.worker import testing_hooks
from app.worker.testing_hooks import PAUSE_AT_ENV, PAUSE_DIR_ENV, PAUSE_TIMEOUT_ENV, pause_point
from tests.e2e.harness import wait_for


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_hooks, "_reached", testing_hooks.Counter())
    for name in (PAUSE_AT_ENV, PAUSE_DIR_ENV, PAUSE_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)


def test_without_the_variable_nothing_happens(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PAUSE_DIR_ENV, str(tmp_path))
    pause_point("running", "job-1")  # returns at once: a hang here fails by pytest's timeout
    assert list(tmp_path.iterdir()) == []


def test_stops_at_a_listed_stage_until_released(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PAUSE_AT_ENV, "running,commit")
    monkeypatch.setenv(PAUSE_DIR_ENV, str(tmp_path))
    pause_point("gate")  # not listed: passes
    passed: list[int] = []

    def job() -> None:
        for _ in range(2):
            pause_point("commit", "job-7")
            passed.append(1)

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    marker = tmp_path / "commit.1.reached"
    wait_for(marker.exists, 10, "the first pause")
    assert json.loads(marker.read_text())["job"] == "job-7"
    assert passed == [] and thread.is_alive()  # blocked, not just late: nothing released it
    (tmp_path / "commit.1.release").touch()
    wait_for(lambda: (tmp_path / "commit.2.reached").exists(), 10, "the second pause")
    assert passed == [1]
    (tmp_path / "resume").touch()
    thread.join(10)
    assert passed == [1, 1]
    pause_point("running")  # after resume: no more stops, no more markers
    assert not (tmp_path / "running.1.reached").exists()


def test_misconfigured_or_forgotten_pauses_raise(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PAUSE_AT_ENV, "running")
    with pytest.raises(RuntimeError, match=PAUSE_DIR_ENV):
        pause_point("running")
    monkeypatch.setenv(PAUSE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(PAUSE_TIMEOUT_ENV, "0.05")
    with pytest.raises(RuntimeError, match="not released"):
        pause_point("running")
