"""The drift-attribution bench: position classes and ΔW applied through hooks."""

from __future__ import annotations

import pytest
import torch

from bench.kl_sources import (
    CLASSES,
    class_mask,
    encode_with_names,
    fact_terms,
    kl_by_class,
    kl_by_layer,
    kl_own_and_others,
    next_token_logprobs,
)
from editing import EditRequest
from editing.evaluate.data import Record
from editing.evaluate.metrics import kl_divergence
from editing.weights.delta import BaseWeights, LayerUpdate, WeightDelta, add_layer_update
from models.specs import weight_out_in

PROMPTS = ["The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the", "The capital of France is"]


def test_names_are_capitalised_words_that_do_not_start_the_prompt(tiny) -> None:
    _, tok = tiny
    prompt = PROMPTS[0]
    flags = encode_with_names(tok, prompt)[1]
    offsets = tok(prompt, return_offsets_mapping=True)["offset_mapping"]
    named = "".join(prompt[a:b] for (a, b), flag in zip(offsets, flags, strict=True) if flag)
    assert named.replace(" ", "") == "DanielleDarrieux"


def test_position_classes_split_the_real_tokens() -> None:
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    names = torch.tensor([[False, True, False, False], [False, True, False, False]])
    masks = {kind: class_mask(kind, attention, names) for kind in CLASSES}
    assert masks["last"].tolist() == [[False, False, False, True], [False, True, False, False]]
    assert torch.equal(masks["before_last"] | masks["last"], masks["all"])
    assert torch.equal(masks["names"] | masks["rest"], masks["before_last"])
    assert not (masks["names"] & masks["rest"]).any()
    assert masks["names"].tolist() == [[False, True, False, False], [False, False, False, False]]


def test_delta_on_every_position_is_the_edited_model_and_leaves_no_hook(tiny) -> None:
    model, tok = tiny
    layer = 1
    weight = weight_out_in(model, layer)
    torch.manual_seed(1)
    dense = 0.5 * torch.randn_like(weight) * weight.std()
    unedited = next_token_logprobs(model, tok, PROMPTS)
    kl = kl_by_class(model, tok, PROMPTS, {layer: dense})
    snapshot = BaseWeights.snapshot(model, [layer])
    add_layer_update(model, layer, LayerUpdate(dense))
    try:
        edited = next_token_logprobs(model, tok, PROMPTS)
    finally:
        snapshot.restore(model)
    assert kl["all"] == pytest.approx(float(kl_divergence(unedited, edited).mean()), rel=1e-3)
    assert kl["all"] > 1e-4 and kl["last"] < kl["all"] and kl["before_last"] > 0
    torch.testing.assert_close(next_token_logprobs(model, tok, PROMPTS), unedited)


def test_by_layer_applies_one_layer_at_a_time(tiny) -> None:
    model, tok = tiny
    torch.manual_seed(2)
    updates = {layer: 0.5 * torch.randn_like(weight_out_in(model, layer)) * weight_out_in(model, layer).std()
               for layer in (1, 2)}
    by_layer = kl_by_layer(model, tok, PROMPTS, updates)
    assert set(by_layer) == {1, 2}
    for layer, dense in updates.items():
        assert by_layer[layer] == pytest.approx(kl_by_class(model, tok, PROMPTS, {layer: dense})["all"])
    assert by_layer[1] != pytest.approx(by_layer[2])


def _factored_delta(model, layers: tuple[int, ...], n_facts: int, silent: int | None = None) -> WeightDelta:
    """A random rank-``n_facts`` update per layer, stored as factors; fact ``silent``'s
    residual column is zero (that fact changes nothing)."""
    torch.manual_seed(3)
    updates = {}
    for layer in layers:
        weight = weight_out_in(model, layer)
        left = torch.randn(weight.shape[0], n_facts) * weight.std()
        if silent is not None:
            left[:, silent] = 0
        right = torch.randn(n_facts, weight.shape[1]) / weight.shape[1] ** 0.5
        updates[layer] = LayerUpdate(left, right)
    return WeightDelta(updates=updates)


def test_fact_terms_add_up_to_the_update(tiny) -> None:
    model, _ = tiny
    delta = _factored_delta(model, (1, 2), n_facts=3)
    for layer, update in delta.updates.items():
        summed = sum(fact_terms(delta, i)[layer] for i in range(3))
        torch.testing.assert_close(summed, update.dense(), rtol=1e-5, atol=1e-6)
    dense = WeightDelta(updates={1: LayerUpdate(delta.updates[1].dense())})
    with pytest.raises(ValueError, match="dense"):
        fact_terms(dense, 0)


def test_own_and_other_facts_are_told_apart(tiny) -> None:
    """Fact 1 writes nothing: record 0's neighbours move only by its own fact, record 1's only
    by the other one, so the two parts add up to the whole here, and neither is zero."""
    model, tok = tiny
    delta = _factored_delta(model, (1, 2), n_facts=2, silent=1)
    records = [Record(0, EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English",
                                     neighborhood_prompts=(PROMPTS[0], PROMPTS[2]))),
               Record(1, EditRequest("Toko Yasuda", "{} plays the", "piano",
                                     neighborhood_prompts=(PROMPTS[1], PROMPTS[2])))]
    kl = kl_own_and_others(model, tok, records, delta)
    assert kl["own fact"] > 1e-5 and kl["other facts"] > 1e-5
    assert kl["own fact"] + kl["other facts"] == pytest.approx(kl["all"], rel=1e-4)
    swapped = kl_own_and_others(model, tok, records[::-1], delta)  # now record 1 owns fact 0
    assert swapped["own fact"] == pytest.approx(kl["other facts"], rel=1e-4)


def test_drift_as_the_batch_grows_watches_the_same_first_records(tiny, corpus, tmp_path) -> None:
    """Each size edits that many records; the figures are always of the first min(sizes)
    records, measured on the model with the larger batch's delta (so they change with it)."""
    from bench.kl_sources import drift_as_batch_grows
    from tests.conftest import FACTS
    from tests.unit.test_editor import make_editor

    editor = make_editor(tiny, corpus, tmp_path)
    records = [Record(i, EditRequest(f.subject, f.prompt, f.target_new, f.target_true or "x",
                                     neighborhood_prompts=(PROMPTS[2],)))
               for i, f in enumerate(FACTS)]
    rows = drift_as_batch_grows(editor, records, [3, 1])
    assert [r["batch"] for r in rows] == [1, 3]
    assert all(r["watched"] == 1 for r in rows)
    assert rows[0]["kl"] > 0 and rows[0]["kl"] != pytest.approx(rows[1]["kl"], rel=1e-3)
