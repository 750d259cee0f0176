"""bench.gpu_smoke, the first run on a GPU, checked here on the CPU with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gpu_smoke
from tests.e2e.harness import save_tiny_model
from tests.shared_data import shared_data_file


def test_refuses_without_cuda_unless_told_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    if gpu_smoke.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_smoke.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_edits_and_reports_every_stage(tmp_path: Path, corpus_file: Path) -> None:
    shared_data_file("mcf_dev.json")  # the records it edits
    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "report.json"
    code = gpu_smoke.main(["--model", str(model), "--device", "cpu", "--dtype", "bf16", "--n", "2",
                           "--stats-samples", "8", "--corpus", str(corpus_file),
                           "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["dtype"] == "bfloat16" and set(report["methods"]) == {"fe", "memit"}
    for result in report["methods"].values():
        assert result["z_per_fact_s"] > 0 and result["solve_s"] > 0
        assert set(result["metrics"]) == set(gpu_smoke.COLUMNS)
        assert result["planned_peak_bytes"] > 0 and result["peak_bytes"] is None  # no CUDA
