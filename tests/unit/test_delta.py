"""WeightDelta: exact revert, factored == dense, verified persistence, compatibility checks."""

from __future__ import annotations

import pytest
import torch

from bench.tiny import tiny_model
from editing.weights.delta import DeltaError, LayerUpdate, WeightDelta
from editing.weights.fingerprint import model_fingerprint
from models.specs import mlp_out_weight, weight_out_in


def random_delta(model: torch.nn.Module, layers=(1, 2), rank: int = 3, seed: int = 0) -> WeightDelta:
    gen = torch.Generator().manual_seed(seed)
    updates = {}
    for layer in layers:
        d_out, d_in = weight_out_in(model, layer).shape
        left = torch.randn(d_out, rank, generator=gen)
        right = torch.randn(rank, d_in, generator=gen) * 0.01
        updates[layer] = LayerUpdate.from_factors(left, right)
    return WeightDelta(updates, model_type=model.config.model_type,
                       base_fingerprint=model_fingerprint(model), keys={1: torch.randn(64, rank)})


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_apply_then_revert_is_bit_identical(arch: str) -> None:
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = random_delta(model)
    for _ in range(5):  # repeated apply/revert never drifts
        base = delta.apply(model)
        assert not torch.equal(mlp_out_weight(model, 1), before[_weight_name(model, 1)])
        WeightDelta.revert(model, base)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def _weight_name(model: torch.nn.Module, layer: int) -> str:
    target = mlp_out_weight(model, layer)
    return next(n for n, p in model.named_parameters() if p is target)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_update_lands_in_out_in_orientation(arch: str) -> None:
    """GPT-2's Conv1D stores (in, out): the (out, in) update must be transposed onto it."""
    model = tiny_model(arch)
    before = weight_out_in(model, 1).clone()
    delta = random_delta(model, layers=(1,))
    delta.apply(model)
    torch.testing.assert_close(weight_out_in(model, 1) - before, delta.updates[1].dense())


def test_factored_and_dense_give_the_same_weights() -> None:
    model_a, model_b = tiny_model("llama"), tiny_model("llama")
    factored = random_delta(model_a, rank=2)
    assert all(u.factored for u in factored.updates.values())
    dense = WeightDelta({k: LayerUpdate(u.dense().clone()) for k, u in factored.updates.items()},
                        model_type="llama")
    factored.apply(model_a)
    dense.apply(model_b)
    for layer in (1, 2):
        assert torch.equal(mlp_out_weight(model_a, layer), mlp_out_weight(model_b, layer))


def test_from_factors_stays_dense_when_that_is_smaller() -> None:
    left, right = torch.randn(8, 8), torch.randn(8, 8)
    update = LayerUpdate.from_factors(left, right)
    assert not update.factored
    torch.testing.assert_close(update.dense(), left @ right)


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny_model("llama")
    delta = random_delta(model)
    delta.hparams = {"layers": [1, 2]}
    path = tmp_path / "d.safetensors"
    sha = delta.save(path)
    loaded = WeightDelta.load(path)
    assert loaded.sha256 == sha == delta.sha256
    assert loaded.layers == [1, 2] and loaded.hparams == {"layers": [1, 2]}
    assert torch.equal(loaded.keys[1], delta.keys[1])
    for layer in (1, 2):
        assert torch.equal(loaded.updates[layer].dense(), delta.updates[layer].dense())
    assert not list(tmp_path.glob("*.tmp")), "atomic write leaves no temp file"


def test_corrupted_file_is_refused(tmp_path) -> None:
    data = bytearray(random_delta(tiny_model("llama")).to_bytes())
    data[-5] ^= 0xFF  # flip bits inside tensor data
    with pytest.raises(DeltaError, match="hash"):
        WeightDelta.from_bytes(bytes(data))
    with pytest.raises(DeltaError):
        WeightDelta.from_bytes(b"not a safetensors file at all")


def test_foreign_delta_is_refused() -> None:
    llama, gpt2 = tiny_model("llama"), tiny_model("gpt2")
    delta = random_delta(llama)
    with pytest.raises(DeltaError, match="model_type"):
        delta.apply(gpt2)
    other_base = tiny_model("llama", seed=1)
    with pytest.raises(DeltaError, match="base model"):
        delta.check_compatible(other_base, model_fingerprint(other_base))
    wrong_layer = WeightDelta({9: LayerUpdate(torch.zeros(32, 64))}, model_type="llama")
    with pytest.raises(DeltaError, match="layer 9"):
        wrong_layer.apply(llama)


def test_combine_equals_sequential_application() -> None:
    model_a, model_b = tiny_model("llama"), tiny_model("llama")
    first, second = random_delta(model_a, seed=1), random_delta(model_a, seed=2)
    first.apply(model_a)
    second.apply(model_a)
    WeightDelta.combine([first, second]).apply(model_b)
    for layer in (1, 2):
        torch.testing.assert_close(mlp_out_weight(model_a, layer), mlp_out_weight(model_b, layer))


def test_rank_is_measured_at_float32_precision() -> None:
    gen = torch.Generator().manual_seed(3)
    one = LayerUpdate(torch.randn(40, 1, generator=gen), torch.randn(1, 50, generator=gen))
    assert one.factored and one.rank() == 1
    assert LayerUpdate(one.dense().clone()).rank() == 1, "float32 rounding is not rank"
    two = LayerUpdate.from_factors(torch.randn(40, 2, generator=gen), torch.randn(2, 50, generator=gen))
    assert two.rank() == 2
    assert LayerUpdate(torch.zeros(4, 4)).rank() == 0


def test_single_fact_delta_hashes_and_round_trips() -> None:
    """A (d, 1) key tensor made by a transpose has odd strides; hashing must not care."""
    keys = torch.randn(1, 64).T
    delta = WeightDelta({1: LayerUpdate(torch.randn(32, 1), torch.randn(1, 64))}, keys={1: keys})
    assert WeightDelta.from_bytes(delta.to_bytes()).sha256 == delta.sha256


def test_stored_form_equals_the_delta_read_back_from_its_bytes() -> None:
    """The worker applies ``delta.stored()`` and commits ``to_bytes()``: they must agree."""

    left = torch.randn(6, 2, dtype=torch.float64)
    right = torch.randn(2, 10, dtype=torch.float64)
    delta = WeightDelta({3: LayerUpdate(left, right), 1: LayerUpdate(torch.randn(6, 10))},
                        model_type="llama", hparams={"layers": (1, 3)}, info={"n": 1},
                        keys={3: torch.randn(10, 1, dtype=torch.float64)})
    stored, read_back = delta.stored(), WeightDelta.from_bytes(delta.to_bytes())
    assert stored.sha256 == read_back.sha256 == delta.sha256
    assert stored.hparams == read_back.hparams and stored.info == read_back.info
    for layer in delta.layers:
        a, b = stored.updates[layer], read_back.updates[layer]
        assert torch.equal(a.dense(), b.dense()) and a.left.dtype == torch.float32
    assert torch.equal(stored.keys[3], read_back.keys[3])
