"""The drift-attribution bench: position classes and ΔW applied through hooks."""

from __future__ import annotations

import pytest
import torch

from bench.kl_sources import (
    CLASSES,
    class_mask,
    encode_with_names,
    kl_by_class,
    kl_by_layer,
    next_token_logprobs,
)
from editing.delta import BaseWeights, LayerUpdate, add_layer_update
from editing.evaluate.metrics import kl_divergence
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
