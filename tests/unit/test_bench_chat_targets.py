"""bench.chat_targets: the targets' pass/fail rule, and the whole bench (every variant, both
protocols) on a tiny random model, 4 records in one batch and 2 x 2 sequential."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import chat_targets
from tests.e2e.harness import save_tiny_model
from tests.shared_data import shared_data_file

GOOD = {"generated_chat_efficacy": 90.0, "chat_efficacy": 96.0, "names_broken": 0.0,
        "efficacy_success": 99.0, "kl": 0.0105}
PRESET = {"efficacy_success": 100.0, "kl": 0.0100}


def test_the_targets_are_the_issues_bounds() -> None:
    assert all(chat_targets.checks(GOOD, PRESET, questions=False).values())
    # with the question given at edit time the greedy answer must reach 95
    assert chat_targets.checks(GOOD, PRESET, questions=True)["generated_chat_efficacy"] is False
    worse = GOOD | {"names_broken": 2.5, "efficacy_success": 98.9, "kl": 0.0106, "chat_efficacy": 94.9}
    failed = chat_targets.checks(worse, PRESET, questions=False)
    assert failed == {"generated_chat_efficacy": True, "chat_efficacy": False, "names_broken": False,
                      "efficacy_success_vs_preset": False, "kl_vs_preset": False}
    # nothing to compare against, or no name the unedited model predicts: not measured
    unmeasured = chat_targets.checks(GOOD | {"names_broken": None}, None, questions=False)
    assert unmeasured["names_broken"] is None and unmeasured["kl_vs_preset"] is None
    assert chat_targets.bounds(True)["generated_chat_efficacy"] == ">= 95"


def test_unknown_variants_are_refused_by_name() -> None:
    assert chat_targets.variant_list("preset, chat_teach") == ["preset", "chat_teach"]
    with pytest.raises(argparse.ArgumentTypeError, match="late_layers"):
        chat_targets.variant_list("preset,nope")


def test_every_variant_and_protocol_on_a_tiny_model(tmp_path: Path, monkeypatch, capsys) -> None:
    shared_data_file("mcf_dev.json")
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "targets.json"
    hparams = ["layers=[1,2]", "v_steps=3", "stats_samples=16", "stats_seq_len=16", "template_tokens=2",
               "mom2_update_weight=10.0"]
    payload = chat_targets.main(["--model", str(model), "--device", "cpu", "--n", "4", "--seq-n", "4",
                                 "--batches", "2", "--probe-records", "2", "--out", str(out),
                                 *[a for h in hparams for a in ("--hparam", h)]])
    saved = json.loads(out.read_text())
    assert list(saved["variants"]) == list(chat_targets.VARIANTS)  # the preset first
    runs = saved["variants"]
    assert runs["late_layers"]["hparams"]["layers"] == [2, 3]
    assert runs["chat_teach"]["hparams"]["chat_question"] and not runs["chat_teach"]["questions"]
    assert runs["chat_teach_question"]["questions"]
    assert runs["name_chat"]["hparams"]["name_context"] == "chat"
    assert runs["chat_answer"]["hparams"]["chat_answer"] and not runs["chat_answer"]["questions"]
    assert runs["chat_answer_question"]["questions"] and runs["name_question_4"]["questions"]
    assert runs["name_question_4"]["hparams"]["name_context"] == "question"
    for run in runs.values():
        for protocol in ("batch", "sequential"):
            assert run[protocol]["wall_s"] > 0 and set(run[protocol]["checks"]) == set(run[protocol]["bounds"])
            assert {"chat_efficacy", "generated_chat_efficacy", "names_broken", "kl"} <= set(run[protocol]["metrics"])
    assert runs["preset"]["sequential"]["batches"] == 2
    assert len(runs["preset"]["batch"]["answers"]) == 4
    # the preset is its own baseline; the question given at edit time changes the update
    assert runs["preset"]["batch"]["checks"]["kl_vs_preset"] is True
    assert runs["chat_teach"]["batch"]["update_norm"] != runs["chat_teach_question"]["batch"]["update_norm"]
    assert runs["preset"]["batch"]["update_norm"] != runs["chat_teach"]["batch"]["update_norm"]
    assert payload["total_s"] > 0 and "pass (" in capsys.readouterr().out
    # a later run without the preset compares with the earlier run's
    again = chat_targets.main(["--model", str(model), "--device", "cpu", "--n", "4", "--protocols", "batch",
                               "--variants", "chat_teach", "--baseline", str(out), "--out", str(tmp_path / "b.json"),
                               *[a for h in hparams for a in ("--hparam", h)]])
    assert again["variants"]["chat_teach"]["batch"]["checks"]["kl_vs_preset"] is not None


def test_the_select_split_edits_the_last_records(tmp_path: Path, monkeypatch) -> None:
    data = shared_data_file("mcf_dev.json")
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "tiny")
    hparams = ["layers=[1,2]", "v_steps=2", "stats_samples=16", "stats_seq_len=16", "template_tokens=2"]
    payload = chat_targets.main(["--model", str(model), "--device", "cpu", "--n", "2", "--split", "select",
                                 "--protocols", "batch", "--variants", "preset", "--out", str(tmp_path / "s.json"),
                                 *[a for h in hparams for a in ("--hparam", h)]])
    last = [r["id"] for r in json.loads(data.read_text())[-2:]]
    assert [a["id"] for a in payload["variants"]["preset"]["batch"]["answers"]] == last
    assert payload["split"] == "select"
    with pytest.raises(SystemExit):  # the sequential probes are the last dev records
        chat_targets.main(["--split", "select", "--protocols", "batch,sequential"])
