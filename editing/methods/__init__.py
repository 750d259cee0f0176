"""Edit methods as registered objects: a target strategy plus a solver (one folder, as peft
keeps one per method). ``get_method("fe")``; add one with :func:`register_method`."""

from editing.methods.base import Method, Solver, TargetSource, TargetStrategy
from editing.methods.registry import (
    METHODS,
    get_method,
    get_strategy,
    method_for_strategy,
    method_names,
    register_method,
    unregister_method,
)
from editing.methods.solvers import LeastSquares
from editing.methods.strategies import BackwardSpread, ForwardReplay, OneLayer, PerLayer

_least_squares = LeastSquares()
register_method("fe", ForwardReplay(), _least_squares,
                "FE: z at the first edited layer, forward replay gives the later layers' targets")
register_method("memit", BackwardSpread(), _least_squares,
                "MEMIT: z at the last edited layer, the residual spread backwards over the layers")
register_method("per_layer", PerLayer(), _least_squares,
                "z optimised at every edited layer separately (baseline)")
register_method("one_layer", OneLayer(), _least_squares,
                "z at the last layer and only that layer edited (baseline)")

__all__ = [
    "METHODS",
    "BackwardSpread",
    "ForwardReplay",
    "LeastSquares",
    "Method",
    "OneLayer",
    "PerLayer",
    "Solver",
    "TargetSource",
    "TargetStrategy",
    "get_method",
    "get_strategy",
    "method_for_strategy",
    "method_names",
    "register_method",
    "unregister_method",
]
