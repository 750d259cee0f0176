"""``targets_from="base"``: a later batch's targets come from the base model, its solve from
the model as edited so far."""

from __future__ import annotations

import pytest
import torch

from editing import EditHparams, EditState, WeightDelta
from editing.targets.zcache import ZCache
from models.specs import mlp_out_weight
from tests.conftest import FACTS
from tests.unit.test_editor import HP, make_editor


def _record_targets(editor) -> list[dict[int, torch.Tensor]]:
    """Keep a copy of every set of targets the editor computes (its own method, wrapped)."""
    seen: list[dict[int, torch.Tensor]] = []
    compute = editor.targets

    def recording(requests, progress=None):
        targets, z = compute(requests, progress)
        seen.append({layer: t.detach().clone() for layer, t in targets.items()})
        return targets, z

    editor.targets = recording
    return seen


@pytest.mark.parametrize("targets_from", ["base", "current"])
def test_a_later_batch_takes_its_targets_from_the_base(tiny, corpus, tmp_path, targets_from: str) -> None:
    editor = make_editor(tiny, corpus, tmp_path, targets_from=targets_from)
    model, _ = tiny
    on_base, _ = editor.targets(FACTS[2:])
    first = editor.edit(FACTS[:2])
    first.delta.apply(model)
    edited = {layer: mlp_out_weight(model, layer).clone() for layer in HP.layers}
    seen = _record_targets(editor)
    second = editor.edit(FACTS[2:], state=EditState.from_deltas([WeightDelta.from_bytes(first.delta.to_bytes())]))
    for layer in HP.layers:  # the chain's weights are back, bit for bit
        assert torch.equal(mlp_out_weight(model, layer), edited[layer])
    used = seen[0]
    same = all(torch.allclose(used[layer], on_base[layer], atol=1e-5) for layer in on_base)
    assert same == (targets_from == "base"), {layer: (used[layer] - on_base[layer]).abs().max() for layer in on_base}
    assert second.delta.hparams.get("targets_from", "current") == targets_from


def test_the_base_copy_lets_the_z_cache_find_z_computed_on_the_base(tiny, corpus, tmp_path) -> None:
    """The first batch's state keeps exact copies of the base matrices, so a later batch's
    targets see the base bit for bit and its z comes from the cache; a state rebuilt from the
    deltas alone sees the base only to float32 rounding (the control: z is computed again)."""
    editor = make_editor(tiny, corpus, tmp_path, targets_from="base")
    editor.z_cache = ZCache(tmp_path / "z")
    model, _ = tiny
    base = {layer: mlp_out_weight(model, layer).clone() for layer in HP.layers}
    editor.targets(FACTS[2:])  # z on the base model, cached
    first = editor.edit(FACTS[:2])
    assert first.state.has_base_for(HP.layers)
    assert all(torch.equal(first.state.base.tensors[layer], base[layer]) for layer in HP.layers)
    first.delta.apply(model)
    optimised: list[int] = []
    optimize = editor._optimize

    def counting(requests, layer, progress):
        optimised.append(len(requests))
        return optimize(requests, layer, progress)

    editor._optimize = counting
    chained = editor.edit(FACTS[2:], state=first.state)
    assert optimised == [], "z for a later batch was recomputed instead of found"
    assert chained.state.base is first.state.base
    editor.edit(FACTS[2:], state=EditState.from_deltas([first.delta]))
    assert optimised, "without the base copy the weights differ from the base in the last bits"


def test_the_solve_still_runs_on_the_edited_weights(tiny, corpus, tmp_path) -> None:
    """Same targets, same earlier keys; only the weights under the solve differ."""
    editor = make_editor(tiny, corpus, tmp_path, targets_from="base")
    model, _ = tiny
    first = editor.edit(FACTS[:2])
    keys_only = EditState(first.state.keys, first.state.held)  # nothing applied: the model is the base
    on_base_weights = editor.edit(FACTS[2:], state=keys_only)
    first.delta.apply(model)
    second = editor.edit(FACTS[2:], state=first.state)
    layer = HP.layers[-1]  # later layers: their keys and residuals see the earlier update
    assert not torch.allclose(second.delta.updates[layer].dense(), on_base_weights.delta.updates[layer].dense(),
                              atol=1e-5)


def test_targets_from_is_validated_and_left_out_at_its_default() -> None:
    with pytest.raises(ValueError, match="targets_from must be one of"):
        HP.replace(targets_from="parent")
    assert "targets_from" not in HP.to_stored()
    base = HP.replace(targets_from="base")
    assert EditHparams.from_dict(base.to_dict()) == base
