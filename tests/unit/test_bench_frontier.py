"""bench.frontier, bench.choose_preset and bench.sequential: parsing, the frontier rule, the
preset rule, and both benchmarks end to end on a tiny model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import choose_preset, frontier, sequential
from tests.e2e.harness import save_tiny_model
from tests.shared_data import shared_data_file


def point(method: str, eff: float, gen: float, kl: float, strength: float = 1.0) -> dict:
    return {"setting": "s", "overrides": {}, "method": method, "knob": "covariance_weight",
            "strength": strength, "metrics": {"efficacy_success": eff, "efficacy_accuracy": 0.0,
                                              "generalization_success": gen, "specificity_success": 0.0,
                                              "kl": kl, "top1": 0.0}}


def test_a_setting_parses_layers_numbers_and_flags() -> None:
    setting = frontier.parse_setting("wide:layers=3-9,v_lr=0.1,v_steps=35,replay_on_templates=true,z_stop=total")
    assert setting.label == "wide"
    assert setting.overrides == {"layers": [3, 4, 5, 6, 7, 8, 9], "v_lr": 0.1, "v_steps": 35,
                                 "replay_on_templates": True, "z_stop": "total"}
    assert frontier.parse_setting("preset").overrides == {}


@pytest.mark.parametrize("text", ["x:v_lrr=0.1", "x:z_stop=sometimes", "x:v_lr"])
def test_a_bad_setting_is_refused_before_any_edit(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        frontier.parse_setting(text)


def test_strength_is_lambda_for_least_squares_and_mu_for_the_null_space_solver() -> None:
    assert frontier.strengths("fe", [1.0, 2.0], [9.0]) == [("covariance_weight", 1.0), ("covariance_weight", 2.0)]
    assert frontier.strengths("fe_alphaedit", [1.0], [9.0, 10.0]) == [("nullspace_l2", 9.0), ("nullspace_l2", 10.0)]


def test_a_point_is_on_the_frontier_unless_another_is_at_least_as_good_everywhere() -> None:
    points = [point("fe", 90, 80, 0.05), point("fe", 95, 85, 0.05), point("fe", 60, 60, 0.01),
              point("memit", 70, 70, 0.05)]
    assert frontier.on_frontier(points) == [False, True, True, False]


def test_the_preset_rule_takes_the_lowest_kl_among_points_that_take_and_generalize() -> None:
    points = [point("fe", 99, 95, 0.20, 1), point("fe", 96, 91, 0.05, 2), point("fe", 95, 89, 0.01, 3),
              point("memit", 80, 70, 0.05, 4), point("memit", 85, 75, 0.09, 5)]
    assert choose_preset.choose(points, "fe")["strength"] == 2  # 3 misses generalization
    assert choose_preset.choose(points, "memit")["strength"] == 5  # none qualifies: the strongest
    assert choose_preset.choose(points, "fe_alphaedit") is None


def test_choosing_on_the_evaluation_records_is_refused(tmp_path: Path) -> None:
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({"split": "dev", "points": []}))
    with pytest.raises(SystemExit, match="choose on 'select'"):
        choose_preset.main([str(dev)])


def test_frontier_end_to_end_on_a_tiny_model(tmp_path: Path, monkeypatch) -> None:
    shared_data_file("mcf_dev.json")
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "tiny")
    common = ["--model", str(model), "--methods", "fe,fe_alphaedit", "--lambdas", "100,1e6", "--mus", "10",
              "--setting", "a:layers=1-2,z_steps=3,stats_samples=16,stats_seq_len=16", "--out-dir", str(tmp_path)]
    one = frontier.main([*common, "--n", "2", "--split", "select", "--name", "one"])
    assert [(p["method"], p["strength"]) for p in one["points"]] == [("fe", 100.0), ("fe", 1e6), ("fe_alphaedit", 10.0)]
    by_lambda = {p["strength"]: p for p in one["points"] if p["method"] == "fe"}
    # λ 1e6 all but forbids a change: its update is far smaller than λ 100's
    assert sum(by_lambda[1e6]["update_norm"]) < 0.1 * sum(by_lambda[100.0]["update_norm"])
    assert (tmp_path / "one.png").stat().st_size > 0
    saved = json.loads((tmp_path / "one.json").read_text())
    assert saved["split"] == "select" and all("on_frontier" in p for p in saved["points"])
    seq = frontier.main([*common, "--sequential", "2x1", "--name", "seq"])
    assert seq["n"] == 2 and seq["sequential"] == [2, 1]
    chosen = choose_preset.main([str(tmp_path / "one.json"), "--methods", "fe"])
    assert chosen["fe"]["knob"] == "covariance_weight"
    merged = frontier.main(["--replot", str(tmp_path / "one.json"), str(tmp_path / "one.json"),
                            "--name", "merged", "--out-dir", str(tmp_path)])
    assert len(merged["points"]) == 6 and (tmp_path / "merged.png").exists()
    with pytest.raises(SystemExit, match="different records"):
        frontier.main(["--replot", str(tmp_path / "one.json"), str(tmp_path / "seq.json"),
                       "--name", "bad", "--out-dir", str(tmp_path)])


def test_sequential_tracks_every_fact_so_far_the_probe_set_and_norm_growth(tmp_path: Path, monkeypatch) -> None:
    shared_data_file("mcf_dev.json")
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "tiny")
    runs = sequential.main(["--model", str(model), "--batches", "2", "--batch-size", "1", "--probe-records", "2",
                            "--methods", "fe", "--hparam", "layers=[1,2]", "--hparam", "z_steps=3",
                            "--hparam", "stats_samples=16", "--hparam", "stats_seq_len=16",
                            "--hparam", "covariance_weight=100", "--out-dir", str(tmp_path)])
    rows = runs["fe"]
    assert [r["facts"] for r in rows] == [1, 2]
    first, second = (max(v["norm"] for v in r["change_norms"].values()) for r in rows)
    assert 0 < first < second  # the accumulated change grows with the second batch
    assert set(rows[0]["change_norms"]) == {"1", "2"}
    saved = json.loads((tmp_path / "sequential_fe.json").read_text())
    assert saved["probe_records"] == 2 and len(saved["rows"]) == 2
    replot = sequential.main(["--replot", str(tmp_path / "sequential_fe.json"), "--out-dir", str(tmp_path)])
    assert replot == {"fe": saved["rows"]} and (tmp_path / "sequential.png").exists()
    path = tmp_path / "sequential_fe.json"
    twice = sequential.main(["--replot", str(path), str(path), "--out-dir", str(tmp_path)])
    assert list(twice) == ["fe (sequential_fe)", "fe (sequential_fe) #2"]  # none is dropped
