"""The batch checks of app/api/fact_checks.py without a server: contradictions, repeats, and
token counts in a real (tiny) tokenizer, including one loaded alone from the model's files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from app.api.errors import ApiError
from app.api.fact_checks import TokenLimits, check_tokens, dedupe_facts, get_tokenizer
from bench.tiny import tiny_tokenizer
from tests.e2e.harness import save_tiny_model

BASE = {"subject": "Paris", "prompt": "{} is in", "target_new": "France"}


def test_repeats_keep_the_first_copy_and_contradictions_name_both() -> None:
    facts = [BASE, {**BASE, "subject": " PARIS ", "target_true": "x"}, {**BASE, "subject": "Rome"}]
    assert dedupe_facts(facts) == [0, 2]
    with pytest.raises(ApiError) as refused:
        dedupe_facts([BASE, {**BASE, "subject": "Rome"}, {**BASE, "target_new": "Italy"}])
    assert refused.value.status == 422
    assert "facts[0] and facts[2]" in refused.value.detail
    assert refused.value.field == "facts[2].target_new"


def test_counts_are_the_tokenizers() -> None:
    tok = tiny_tokenizer()
    fact = {**BASE, "paraphrase_prompts": ["Paris lies in"]}
    total = sum(len(tok(t, add_special_tokens=False)["input_ids"])
                for t in ("Paris", "{} is in", " France", "Paris lies in"))
    assert check_tokens([fact], tok, TokenLimits(100, 100, 100)) == total
    with pytest.raises(ApiError, match="more than 100 tokens in all its texts") as refused:
        check_tokens([fact] * 200, tok, TokenLimits(100, 100, 100))
    assert refused.value.field == "facts"


def test_an_api_without_the_model_loads_the_tokenizer_alone(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    services = SimpleNamespace(settings=SimpleNamespace(model=str(model)))
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(services=services)))
    loaded = get_tokenizer(request)  # type: ignore[arg-type]
    expected = tiny_tokenizer()
    text = "The mother tongue of Danielle Darrieux is"
    assert loaded(text)["input_ids"] == expected(text)["input_ids"]
