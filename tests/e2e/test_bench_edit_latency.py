"""bench.edit_latency end to end on the tiny model: it times what it says it times."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import edit_latency
from tests.shared_data import shared_data_file


def test_edit_latency_times_committed_jobs_and_the_library(tmp_path: Path) -> None:
    shared_data_file("mcf_dev.json")
    report = edit_latency.main(["--tiny", str(tmp_path / "tiny"), "--n", "2",
                                "--out", str(tmp_path / "report.json")])
    service = report["service"]
    runs = service["one_fact"]["runs"]
    assert len(runs) == 2 and len(report["library"]["runs"]) == 2
    versions = [service["first"]["version"], *[r["version"] for r in runs],
                service["batch"]["version"]]
    assert versions == ["v1", "v2", "v3", "v4"]  # one version per job, in order
    for run in [service["first"], *runs, service["batch"]]:
        # created -> committed from the job's own timestamps, within what the client saw
        assert 0 < run["seconds"] <= run["seen_s"] + 0.05
        assert run["gate_s"] < run["seconds"] and run["compute_s"] < run["seconds"]
    assert service["batch"]["facts"] == 2
    assert 0 < service["one_fact"]["gate_share"] < 1
    assert (tmp_path / "report.json").exists()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model's statistics and prefixes go to a temporary cache."""
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path / "cache"))
