"""FE on the real default model: three CounterFact edits in one batch."""

from __future__ import annotations

import pytest

from editing import Editor
from editing.evaluate.data import load_records
from editing.forward.logprob import target_logprob
from editing.presets import preset_for
from models.load import cache_dir, load_model
from tests.shared_data import shared_data_file

pytestmark = pytest.mark.default_model


def test_fe_edits_three_counterfact_records() -> None:
    lm = load_model()
    records = [r.request for r in load_records(shared_data_file("mcf_dev.json"), limit=3)]
    editor = Editor(lm.model, lm.tokenizer, hparams=preset_for(lm.name), model_name=lm.name, cache_dir=cache_dir())
    result = editor.edit(records)
    ratios = result.diagnostics["residual_ratio"]
    assert ratios[-1] < ratios[0] * 0.5, ratios

    def prefers(prompt: str, first: str, second: str) -> bool:
        return target_logprob(lm.model, lm.tokenizer, prompt, first) > target_logprob(
            lm.model, lm.tokenizer, prompt, second
        )

    neighbours_before = [
        prefers(p, r.target_true, r.target_new) for r in records for p in r.neighborhood_prompts
    ]
    result.delta.apply(lm.model)
    for r in records:
        assert prefers(r.text, r.target_new, r.target_true), r.text
    neighbours_after = [
        prefers(p, r.target_true, r.target_new) for r in records for p in r.neighborhood_prompts
    ]
    kept = sum(a for a, b in zip(neighbours_after, neighbours_before, strict=True) if b)
    assert kept >= 0.7 * sum(neighbours_before), (kept, sum(neighbours_before))
