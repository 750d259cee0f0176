"""Shared fixtures: tiny random models with small hyper-parameters and a local corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tiny import CORPUS, tiny_model, tiny_tokenizer
from editing import EditHparams, EditRequest
from editing.solve.stats import Corpus

TINY_HPARAMS = EditHparams(
    layers=(1, 2), z_lr=0.5, z_steps=8, stats_samples=32, stats_seq_len=16,
    template_prefixes=("The", "I"), template_tokens=3, covariance_weight=100.0,
)

FACTS = [
    EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English", "French"),
    EditRequest("Toko Yasuda", "{} plays the", "guitar", "piano"),
    EditRequest("Watts Humphrey", "What university did {} attend?", "Illinois Institute of Technology"),
]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(CORPUS * 20))
    return path


@pytest.fixture(scope="session")
def corpus(corpus_file: Path) -> Corpus:
    return Corpus(str(corpus_file))


@pytest.fixture(params=["llama", "gpt2"])
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny(arch: str):
    """(model, tokenizer) for each architecture (llama uses the BOS-style tokenizer)."""
    tokenizer = tiny_tokenizer("bos" if arch == "llama" else "bpe")
    return tiny_model(arch, vocab_size=len(tokenizer)), tokenizer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Opt-in markers (``soak``): their tests run only when ``-m`` names the marker, so the
    plain ``pytest`` of ``make test`` and CI leaves them out."""
    expression = config.getoption("markexpr") or ""
    if "soak" in expression:
        return
    kept = [item for item in items if item.get_closest_marker("soak") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
