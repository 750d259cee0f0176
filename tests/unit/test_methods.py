"""Edit methods as registered objects: the registry, and a solver added from outside."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from editing import EditHparams, Editor, WeightDelta
from editing.evaluate.cli import delta_method
from editing.forward.logprob import target_logprob
from editing.methods import (
    METHODS,
    ForwardReplay,
    get_method,
    method_names,
    register_method,
    unregister_method,
)
from tests.conftest import FACTS, TINY_HPARAMS

HP = TINY_HPARAMS.replace(
    z_steps=20, clamp_norm_factor=10.0, kl_factor=0.0, weight_decay=0.0, covariance_weight=1.0
)


class RidgeOnly:
    """A toy solver: ``Δ = R Kᵀ (K Kᵀ + μI)⁻¹``, ignoring the key statistics and old keys."""

    name = "ridge_only"
    null_space = False

    def __init__(self, mu: float = 1.0) -> None:
        self.mu = mu
        self.calls = 0

    def config(self, hparams):
        return hparams

    def solve(self, keys, residuals, cov, old_kkT, hparams):
        self.calls += 1
        k, r = keys.double(), residuals.double().to(keys.device)
        gram = k @ k.T + self.mu * torch.eye(k.shape[0], dtype=torch.float64, device=k.device)
        return r, torch.linalg.solve(gram, k).T


@pytest.fixture
def ridge() -> Iterator[RidgeOnly]:
    solver = RidgeOnly()
    register_method("fe_ridge", ForwardReplay(), solver, "FE targets, ridge-only solve (test)")
    yield solver
    unregister_method("fe_ridge")


def test_the_built_in_methods_are_registered() -> None:
    assert {"fe", "memit", "per_layer", "one_layer"} <= set(method_names())
    assert get_method("fe").strategy.name == "forward_replay"
    assert get_method("memit").strategy.name == "backward_spread"
    assert all(m.description for m in METHODS.values())


def test_an_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'nope' unknown.*fe.*memit.*one_layer.*per_layer"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown"):
        TINY_HPARAMS.with_method("nope")


def test_a_name_cannot_be_registered_twice() -> None:
    fe = get_method("fe")
    with pytest.raises(ValueError, match="already registered"):
        register_method("fe", fe.strategy, fe.solver)


def test_stored_hparams_without_a_method_keep_working() -> None:
    """Versions stored before methods were recorded have ``strategy`` only."""
    old = {**TINY_HPARAMS.to_stored(), "strategy": "backward_spread"}
    assert "method" not in TINY_HPARAMS.to_stored()  # unchanged stored form, unchanged hashes
    hp = EditHparams.from_stored(old)
    assert hp.method_name == "memit"
    assert TINY_HPARAMS.with_method("one_layer").edited_layers == (2,)
    assert EditHparams.from_dict(TINY_HPARAMS.with_method("memit").to_dict()).method == "memit"
    moved = TINY_HPARAMS.replace(method="memit")  # a method brings its strategy
    assert moved.method_name == "memit" and moved.strategy_name == "backward_spread"


def test_a_solver_registered_in_a_test_edits_through_the_editor(tiny, corpus, tmp_path, ridge) -> None:
    model, tok = tiny
    editor = Editor(model, tok, hparams=HP.with_method("fe_ridge"), model_name="tiny", cache_dir=tmp_path,
                    corpus=corpus)
    before = target_logprob(model, tok, FACTS[0].text, FACTS[0].target_new)
    result = editor.edit(FACTS[:1])
    assert ridge.calls == len(HP.edited_layers)
    assert result.delta.info["method"] == "fe_ridge"
    assert result.diagnostics["method"] == "fe_ridge"
    assert delta_method(result.delta, None) == "fe_ridge"
    result.delta.apply(model)
    assert target_logprob(model, tok, FACTS[0].text, FACTS[0].target_new) > before + 0.2


def test_the_method_of_an_old_delta_comes_from_its_strategy() -> None:
    old = WeightDelta(updates={}, hparams={"layers": [1], "strategy": "backward_spread"},
                      info={"strategy": "backward_spread"})
    assert delta_method(old, "fe") == "memit"
    assert delta_method(WeightDelta(updates={}), "fe") == "fe"


def test_a_solver_without_the_protocol_is_refused() -> None:
    class SolveOnly:
        name = "solve_only"

        def solve(self, keys, residuals, cov, old_kkT, hparams):  # noqa: ANN001, ANN201
            raise AssertionError("never called")

    with pytest.raises(TypeError, match=r"lacks \['config', 'null_space'\]"):
        register_method("fe_solve_only", ForwardReplay(), SolveOnly())
    assert "fe_solve_only" not in method_names()
