"""AlphaEdit's null-space solver: the projector, the update's null-space property, its
reduction to plain least squares when nothing is preserved, old keys, and real edits."""

from __future__ import annotations

import gc

import pytest
import torch

from editing import EditHparams, Editor
from editing.forward.logprob import target_logprob
from editing.hparams import NullSpace
from editing.methods import (
    LeastSquares,
    LeastSquaresConfig,
    NullSpaceConfig,
    NullSpaceProjection,
    get_method,
    method_names,
)
from editing.methods.alphaedit import null_space_basis, projector
from tests.conftest import FACTS, TINY_HPARAMS

D_K, D, N = 24, 10, 4


def _cov(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A PSD (d_k, d_k) E[k kᵀ] with 12 eigenvalues in [1, 5] and 12 in [1e-4, 1e-3]; also
    the eigenvectors of the big and of the small ones."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D_K, D_K, generator=g, dtype=torch.float64))
    values = torch.cat([torch.linspace(1.0, 5.0, 12), torch.linspace(1e-4, 1e-3, 12)])
    return (q * values.double()) @ q.T, q[:, :12], q[:, 12:]


def _ns(**changes) -> NullSpaceConfig:
    """The null-space solver's config from the test hparams with ``changes``."""
    return NullSpaceProjection().config(TINY_HPARAMS.replace(nullspace=NullSpace(**changes)))


def _ls(**changes) -> LeastSquaresConfig:
    return LeastSquares().config(TINY_HPARAMS.replace(**changes))


def _keys_residuals(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D_K, N, generator=g), torch.randn(D, N, generator=g)


def test_the_projector_is_symmetric_idempotent_and_kills_the_preserved_directions() -> None:
    cov, big, small = _cov()
    p = projector(cov, 0.01)
    assert torch.allclose(p, p.T, atol=1e-12)
    assert torch.allclose(p @ p, p, atol=1e-10)
    assert torch.linalg.matrix_rank(p) == 12
    assert (p @ big).norm() < 1e-10
    assert torch.allclose(p @ small, small, atol=1e-10)


def test_the_update_does_not_act_on_the_preserved_keys() -> None:
    cov, big, _ = _cov()
    keys, residuals = _keys_residuals()
    left, right = NullSpaceProjection().solve(keys, residuals, cov, None, _ns(threshold=0.01))
    delta = left @ right
    assert left.dtype == right.dtype == torch.float64
    assert right.shape == (N, D_K) and torch.linalg.matrix_rank(delta) <= N
    assert (delta @ big).norm() < 1e-10 * delta.norm()
    assert delta.norm() > 0


def test_with_nothing_preserved_it_is_least_squares_without_the_statistics_term() -> None:
    """Threshold above every eigenvalue: P = I, and the reference's
    ``(KKᵀ + C_old + μI)⁻¹ K Rᵀ`` is MEMIT's closed form with λ = 0 and l2 = μ."""
    cov, _, _ = _cov()
    keys, residuals = _keys_residuals()
    old = torch.randn(D_K, 3, dtype=torch.float64)
    old_kkT = old @ old.T
    ns = NullSpaceProjection().solve(keys, residuals, cov, old_kkT,
                                     _ns(threshold=1e6, l2=3.0))
    ls = LeastSquares().solve(keys, residuals, cov, old_kkT, _ls(covariance_weight=0.0, l2=3.0))
    assert torch.allclose(ns[0] @ ns[1], ls[0] @ ls[1], atol=1e-10)


def test_it_matches_the_reference_formula() -> None:
    """``Δᵀ = (P (K Kᵀ + C_old) + μI)⁻¹ P K Rᵀ``, solved as the reference does."""
    cov, _, _ = _cov()
    keys, residuals = _keys_residuals()
    old = torch.randn(D_K, 3, dtype=torch.float64)
    k, r, p = keys.double(), residuals.double(), projector(cov, 0.01)
    expected = torch.linalg.solve(p @ (k @ k.T + old @ old.T) + 10.0 * torch.eye(D_K, dtype=torch.float64),
                                  p @ k @ r.T).T
    left, right = NullSpaceProjection().solve(keys, residuals, cov, old @ old.T,
                                              _ns(threshold=0.01))
    assert torch.allclose(left @ right, expected, atol=1e-9)


def test_earlier_keys_barely_move_under_the_next_update() -> None:
    """Sequential editing: with the first batch's Σ K Kᵀ passed as old keys, the second
    update's action on those keys is a small fraction of what it is without them."""
    cov, _, _ = _cov()
    hp = _ns(threshold=0.01, l2=1e-3)
    solver = NullSpaceProjection()
    first, _ = _keys_residuals(seed=2)
    second, residuals = _keys_residuals(seed=3)
    old_kkT = (first.double() @ first.double().T) * 1e3  # as if repeated: a hard constraint
    with_old = solver.solve(second, residuals, cov, old_kkT, hp)
    without = solver.solve(second, residuals, cov, None, hp)
    moved_with = (with_old[0] @ with_old[1] @ first.double()).norm()
    moved_without = (without[0] @ without[1] @ first.double()).norm()
    assert moved_with < 0.05 * moved_without
    # ... and the new keys are still written
    reached = with_old[0] @ with_old[1] @ second.double()
    assert (reached - residuals.double()).norm() < 0.5 * residuals.double().norm()


def test_the_projector_is_computed_once_per_statistics_and_threshold() -> None:
    cov, _, _ = _cov()
    solver = NullSpaceProjection()
    first = solver.basis(cov, 0.01)
    assert solver.basis(cov, 0.01) is first
    assert solver.basis(cov, 0.5) is not first
    assert solver.basis(cov.clone(), 0.01) is not first
    assert null_space_basis(cov, 1e-9).shape == (D_K, 0)
    del cov
    gc.collect()
    assert not solver._bases  # entries go with their statistics


def test_a_threshold_below_every_eigenvalue_changes_nothing() -> None:
    cov, _, _ = _cov()
    keys, residuals = _keys_residuals()
    left, right = NullSpaceProjection().solve(keys, residuals, cov, None,
                                              _ns(threshold=1e-9))
    assert (left @ right).abs().max() == 0


def test_the_alphaedit_methods_are_registered_with_every_strategy() -> None:
    names = {"alphaedit": "backward_spread", "fe_alphaedit": "forward_replay",
             "per_layer_alphaedit": "per_layer", "one_layer_alphaedit": "one_layer"}
    assert set(names) <= set(method_names())
    for name, strategy in names.items():
        assert get_method(name).strategy.name == strategy
        assert isinstance(get_method(name).solver, NullSpaceProjection)
    assert TINY_HPARAMS.with_method("memit").method_name == "memit"  # defaults unchanged
    assert EditHparams.from_stored({**TINY_HPARAMS.to_stored(), "strategy": "backward_spread"}
                                   ).method_name == "memit"


def test_the_null_space_settings_are_left_out_of_the_stored_form_at_their_defaults() -> None:
    d = TINY_HPARAMS.to_stored()
    assert "nullspace_threshold" not in d and "nullspace_l2" not in d
    assert EditHparams.from_stored(d) == TINY_HPARAMS
    tuned = TINY_HPARAMS.with_overrides({"nullspace.threshold": 0.1})
    assert tuned.to_stored()["nullspace_threshold"] == 0.1
    assert EditHparams.from_stored(tuned.to_stored()) == tuned


@pytest.mark.parametrize("arch", ["llama"])
def test_fe_alphaedit_raises_the_target_on_a_tiny_model(tiny, corpus, tmp_path) -> None:
    model, tok = tiny
    hp = TINY_HPARAMS.replace(z_steps=20, clamp_norm_factor=10.0, kl_factor=0.0,
                              weight_decay=0.0, nullspace=NullSpace(l2=1e-2)).with_method("fe_alphaedit")
    editor = Editor(model, tok, hparams=hp, model_name="tiny", cache_dir=tmp_path, corpus=corpus)
    # preserve the top half of each layer's key directions, whatever the tiny model's scale
    values = [torch.linalg.eigvalsh(c.double()) for c in editor.covariances().values()]
    threshold = float(min(v.median() for v in values))
    hp = hp.replace(nullspace=NullSpace(threshold, 1e-2))
    editor = Editor(model, tok, hparams=hp, model_name="tiny", cache_dir=tmp_path, corpus=corpus)
    before = target_logprob(model, tok, FACTS[0].text, FACTS[0].target_new)
    result = editor.edit(FACTS[:1])
    assert result.delta.info["method"] == "fe_alphaedit"
    assert result.delta.hparams["nullspace_threshold"] == threshold
    result.delta.apply(model)
    assert target_logprob(model, tok, FACTS[0].text, FACTS[0].target_new) > before + 0.2
