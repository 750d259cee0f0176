"""One FE edit on the real default model, exported as a PEFT adapter: PEFT gives the logits of
the model with the delta applied, and the edited fact with them.

z gets 10 steps instead of the preset's 25 (about a minute of CPU time for the whole test on
2 cores): the equivalence does not depend on how good the edit is, and 10 steps still make
the model prefer the new target."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from editing import Editor, EditRequest, WeightDelta
from editing.export.peft import export_peft_adapter
from editing.forward.logprob import target_logprob
from editing.presets import preset_for
from models.load import cache_dir, load_model

pytestmark = pytest.mark.default_model
peft = pytest.importorskip("peft")

FACT = EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English", "French")
PROMPTS = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of"]


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_one_edit_as_an_adapter(tmp_path: Path) -> None:
    lm = load_model()
    hparams = dataclasses.replace(preset_for(lm.name), z_steps=10)
    editor = Editor(lm.model, lm.tokenizer, hparams=hparams, model_name=lm.name, cache_dir=cache_dir())
    delta = editor.edit([FACT]).delta
    ids = lm.tokenizer(PROMPTS, return_tensors="pt", padding=True)["input_ids"]

    saved = delta.apply(lm.model)
    want = logits(lm.model, ids)
    WeightDelta.revert(lm.model, saved)
    before = logits(lm.model, ids)
    assert (want - before).abs().max() > 0.1  # the edit changes the logits

    adapter = export_peft_adapter([delta], lm.model, tmp_path / "v1")
    assert adapter.r == 8 and adapter.layers == delta.layers
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = peft.PeftModel.from_pretrained(lm.model, tmp_path / "v1").eval()
    got = logits(model, ids)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), float((got - want).abs().max())
    assert target_logprob(model, lm.tokenizer, FACT.text, "English") > target_logprob(
        model, lm.tokenizer, FACT.text, "French")
