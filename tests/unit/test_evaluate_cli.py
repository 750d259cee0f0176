"""`python -m editing evaluate` end to end on a tiny saved model: the report's public keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.tiny import tiny_model, tiny_tokenizer
from editing.cli import main

# The public contract, spelled out here on purpose (not imported from the code under test).
METRICS = [
    "efficacy_success", "efficacy_accuracy", "generalization_success", "generalization_accuracy",
    "specificity_success", "kl", "top1", "top5", "top10",
]
TOP_LEVEL = ["model", "method", "dataset", "n", "hparams", "metrics", "timings"]

MCF = [
    {
        "id": 0, "subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English", "target_true": "French",
        "paraphrase_prompts": ["Danielle Darrieux, a native",
                               "Danielle Darrieux spoke the language"],
        "neighborhood_prompts": ["The native language of Montesquieu is",
                                 "Michel Rocard is a native speaker of"],
    },
    {
        "id": 1, "subject": "Toko Yasuda", "prompt": "{} plays the",
        "target_new": "piano", "target_true": "guitar",
        "paraphrase_prompts": ["Toko Yasuda is known for playing the"],
        "neighborhood_prompts": ["Apple A5 was created by"],
    },
    {
        "id": 2, "subject": "Paris", "prompt": "{} is the capital of",
        "target_new": "Germany", "target_true": "France",
        "paraphrase_prompts": [], "neighborhood_prompts": ["Berlin is the capital of"],
    },
]
ZSRE = [
    {
        "id": 0, "subject": "Watts Humphrey", "prompt": "What university did {} attend?",
        "target_new": "Illinois Institute of Technology", "target_true": "",
        "paraphrase_prompts": ["What university did Watts Humphrey take part in?"],
        "neighborhood_prompts": ["nq question: what is the capital of France?"],
        "neighborhood_prompts_answers": ["Paris"],
    },
]
TINY_EDIT = [
    "--layers", "1-2", "--hparam", "z_steps=4", "--hparam", "stats_samples=16",
    "--hparam", "stats_seq_len=16", "--hparam", "template_tokens=3",
    "--hparam", "template_prefixes=The,I", "--hparam", "covariance_weight=100",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate_cli")
    tok = tiny_tokenizer("bos")
    tiny_model("llama", vocab_size=len(tok)).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "mcf.json").write_text(json.dumps(MCF))
    (root / "zsre.json").write_text(json.dumps(ZSRE))
    return root


def check_report(path: Path, dataset: str, n: int) -> dict:
    report = json.loads(path.read_text())
    for key in TOP_LEVEL:
        assert key in report, key
    assert report["dataset"] == dataset and report["n"] == n
    for key in METRICS:
        assert key in report["metrics"], key
    for key, value in report["metrics"].items():
        if value is None:
            continue
        assert value >= 0.0, key
        if key != "kl":
            assert value <= 100.0, key
    assert report["timings"]["evaluate_s"] > 0
    return report


def test_edit_then_evaluate_writes_every_key(workdir: Path, corpus_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out, delta = workdir / "report.json", workdir / "delta.safetensors"
    rc = main([
        "evaluate", "--data", str(workdir / "mcf.json"), "--n", "2", "--method", "fe",
        "--model", str(workdir / "model"), "--cache-dir", str(workdir / "cache"),
        "--corpus", str(corpus_file), "--batch-size", "4", "--out", str(out),
        "--save-delta", str(delta), *TINY_EDIT,
    ])
    assert rc == 0
    report = check_report(out, "counterfact", 2)
    assert report["method"] == "fe"
    assert report["hparams"]["layers"] == [1, 2] and report["hparams"]["z_steps"] == 4
    assert report["counts"]["records"] == 2 and report["counts"]["neighborhood_prompts"] == 3
    assert report["metrics"]["efficacy_success"] is not None
    assert report["metrics"]["kl"] > 0  # the edit moved the neighborhood distribution a little
    assert delta.exists() and report["delta"]["layers"] == [1, 2]
    assert "efficacy_success" in capsys.readouterr().out  # the printed table


def _saved_delta(workdir: Path, corpus_file: Path) -> Path:
    """A two-fact FE delta of the tiny model, computed once per module."""
    delta = workdir / "delta.safetensors"
    if not delta.exists():
        assert main([
            "evaluate", "--data", str(workdir / "mcf.json"), "--n", "2", "--method", "fe",
            "--model", str(workdir / "model"), "--cache-dir", str(workdir / "cache"),
            "--corpus", str(corpus_file), "--out", str(workdir / "r.json"),
            "--save-delta", str(delta), *TINY_EDIT,
        ]) == 0
    return delta


def test_saved_delta_evaluates_on_zsre(workdir: Path, corpus_file: Path) -> None:
    delta = _saved_delta(workdir, corpus_file)
    out = workdir / "zsre_report.json"
    rc = main(["evaluate", "--data", str(workdir / "zsre.json"), "--delta", str(delta),
               "--model", str(workdir / "model"), "--out", str(out)])
    assert rc == 0
    report = check_report(out, "zsre", 1)
    assert report["method"] == "fe"  # recovered from the delta's recorded strategy
    for key in ("zsre_efficacy", "zsre_generalization", "zsre_specificity"):
        assert report["metrics"][key] is not None
    assert report["metrics"]["efficacy_success"] is None  # zsRE has no true target
    assert "edit_s" not in report["timings"]


def test_bad_data_fails_with_the_record_and_field(workdir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = workdir / "bad.json"
    bad.write_text(json.dumps([MCF[0], {**MCF[1], "prompt": "no placeholder"}]))
    rc = main(["evaluate", "--data", str(bad), "--model", str(workdir / "model"),
               "--out", str(workdir / "never.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "record 1" in err and "'prompt'" in err
    assert not (workdir / "never.json").exists()


def test_without_out_the_table_is_printed_and_nothing_written(
        workdir: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's results command has no --out: it must run and print the figures."""
    delta = _saved_delta(workdir, corpus_file)
    capsys.readouterr()
    before = set(workdir.iterdir())
    rc = main(["evaluate", "--data", str(workdir / "zsre.json"), "--delta", str(delta),
               "--model", str(workdir / "model")])
    assert rc == 0
    assert "zsre_efficacy" in capsys.readouterr().out
    assert set(workdir.iterdir()) == before
