"""bench.parity end to end on a tiny model: both dtypes, the verdict, the one-fact policies."""

from __future__ import annotations

import json
from pathlib import Path

from bench import parity
from tests.e2e.harness import save_tiny_model
from tests.shared_data import shared_data_file


def test_parity_reports_both_dtypes_and_both_rounding_policies(tmp_path: Path, monkeypatch) -> None:
    shared_data_file("mcf_dev.json")
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "parity.json"
    parity.main(["--model", str(model), "--n", "2", "--one-fact", "1", "--methods", "fe",
                 "--dtypes", "float32,bf16", "--out", str(out)])
    report = json.loads(out.read_text())
    fp32, bf16 = report["runs"]["float32"]["fe"], report["runs"]["bf16"]["fe"]
    assert "one_fact_edits" not in fp32
    assert set(bf16["one_fact_edits"]) == {"held_float32", "rounded"}
    assert all(s["error"] < 1e-3 for s in fp32["survival_batch"])  # float32 stores the update
    verdict = report["verdict"]["bf16"]["fe"]
    assert set(verdict["diff_points"]) >= {"efficacy_success", "generalization_success"}
