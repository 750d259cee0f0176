"""The editing CLI end to end on a tiny model saved to disk (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.tiny import tiny_model, tiny_tokenizer
from editing import WeightDelta

RECORDS = [
    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is", "target_new": "English",
     "target_true": "French", "paraphrase_prompts": ["Danielle Darrieux speaks"],
     "neighborhood_prompts": ["The mother tongue of Michel Rocard is"]},
    {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "guitar", "target_true": "piano",
     "paraphrase_prompts": ["Toko Yasuda is known for the"], "neighborhood_prompts": ["Rome plays the"]},
]
TINY_FLAGS = ["--layers", "1-2", "--hparam", "z_steps=5", "--hparam", "stats_samples=16",
              "--hparam", "stats_seq_len=16", "--hparam", "template_prefixes=The,I",
              "--hparam", "template_tokens=3"]


def saved_tiny(path: Path, arch: str) -> Path:
    """A tiny ``llama`` (BOS-style tokenizer) or ``gpt2`` (BPE) checkpoint ``--model`` can load."""
    tok = tiny_tokenizer("bos" if arch == "llama" else "bpe")
    tiny_model(arch, vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_tiny(tmp_path_factory.mktemp("tiny-model"), "llama")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "editing", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_precompute_then_edit(tiny_dir: Path, tmp_path: Path, corpus_file: Path) -> None:
    data = tmp_path / "facts.json"
    data.write_text(json.dumps(RECORDS))
    common = ["--model", str(tiny_dir), "--cache-dir", str(tmp_path / "cache"), "--corpus", str(corpus_file),
              *TINY_FLAGS]
    pre = run_cli("precompute-z", "--data", str(data), "--num-edits", "2", *common, cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr
    assert len(list((tmp_path / "cache" / "z").glob("*.safetensors"))) == 2
    out = tmp_path / "delta.safetensors"
    edit = run_cli("edit", "--data", str(data), "--num-edits", "2", "--batch-size", "1",
                   "--out", str(out), *common, cwd=tmp_path)
    assert edit.returncode == 0, edit.stderr
    assert "Danielle Darrieux" in edit.stdout and "batch 2" in edit.stdout
    delta = WeightDelta.load(out)
    assert delta.layers == [1, 2]
    assert delta.info["n_requests"] == 2 and delta.keys[1].shape[1] == 2


def test_bad_data_gives_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([{**RECORDS[0], "prompt": "no slot here"}]))
    result = run_cli("edit", "--data", str(data), "--model", str(tiny_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert "prompt" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_tiny(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_edit_in_half_precision_on_the_cpu(
    arch: str, dtype: str, tiny_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path, corpus_file: Path
) -> None:
    """``--dtype bf16|fp16`` is honoured on the CPU too (it used to fall back to float32)."""
    data = tmp_path / "facts.json"
    data.write_text(json.dumps(RECORDS))
    model_dir = tiny_dir if arch == "llama" else tiny_gpt2_dir
    out = tmp_path / "delta.safetensors"
    edit = run_cli("edit", "--data", str(data), "--num-edits", "2", "--out", str(out),
                   "--model", str(model_dir), "--dtype", dtype, "--device", "cpu",
                   "--cache-dir", str(tmp_path / "cache"), "--corpus", str(corpus_file),
                   *TINY_FLAGS, cwd=tmp_path)
    assert edit.returncode == 0, edit.stderr
    delta = WeightDelta.load(out)
    assert delta.base_dtype == {"bf16": "bfloat16", "fp16": "float16"}[dtype]
    assert delta.layers == [1, 2]
