"""The one table of edit methods: ``METHODS[name] -> Method``.

Everything that offers a choice of method reads it: the CLI's ``--method`` choices, the API
schema's ``method`` enum, ``Settings.method`` validation, the worker's editors, the evaluation
CLI and the benchmarks. The built-in methods are registered by ``editing/methods/__init__.py``;
this module imports nothing of ``editing`` so ``EditHparams`` can look names up here.
"""

from __future__ import annotations

from typing import Any

from editing.methods.base import Method, Solver, TargetStrategy

METHODS: dict[str, Method] = {}
"""Registered methods by name, in registration order (the first per strategy is its default)."""


def register_method(
    name: str,
    strategy: TargetStrategy,
    solver: Solver[Any],
    description: str = "",
    *,
    replace: bool = False,
) -> Method:
    """Add a method; a name already taken is a ValueError unless ``replace``."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"method name {name!r}: use letters, digits and underscores")
    if name in METHODS and not replace:
        raise ValueError(f"method {name!r} is already registered")
    method = Method(name, strategy, _typed(solver), description)
    METHODS[name] = method
    return method


def _typed(solver: Any) -> Solver[Any]:
    """``solver`` itself when it follows the Solver protocol (``config``, ``null_space``,
    ``solve``); a TypeError saying what is missing otherwise."""
    missing = [name for name in ("config", "null_space", "solve") if not hasattr(solver, name)]
    if missing:
        raise TypeError(f"solver {getattr(solver, 'name', solver)!r} lacks {missing} (the Solver "
                        "protocol of editing/methods/base.py)")
    return solver  # type: ignore[no-any-return]


def unregister_method(name: str) -> None:
    """Remove a method (tests that register a toy one clean up with this)."""
    METHODS.pop(name, None)


def method_names() -> tuple[str, ...]:
    """The registered names, sorted."""
    return tuple(sorted(METHODS))


def get_method(name: str) -> Method:
    """The method called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method {name!r} unknown; use one of {list(method_names())}") from None


def get_strategy(name: str) -> TargetStrategy:
    """The strategy object registered under ``name`` (by some method)."""
    for method in METHODS.values():
        if method.strategy.name == name:
            return method.strategy
    known = sorted({m.strategy.name for m in METHODS.values()})
    raise ValueError(f"strategy {name!r} unknown; use one of {known}")


def method_for_strategy(name: str) -> Method:
    """The default method of a strategy: the first registered that uses it (hyper-parameters
    and deltas from before methods were recorded name only the strategy)."""
    for method in METHODS.values():
        if method.strategy.name == name:
            return method
    raise ValueError(f"no method uses strategy {name!r}")


def is_null_space(name: str) -> bool:
    """Whether method ``name`` solves with AlphaEdit's null-space projection: its strength is
    μ (``nullspace.l2``), and λ (``covariance_weight``) does not enter its solve (the
    solver's declared ``null_space``)."""
    return get_method(name).null_space
