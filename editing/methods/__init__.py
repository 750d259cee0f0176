"""Edit methods as registered objects: a target strategy plus a solver (one folder, as peft
keeps one per method). ``get_method("fe")``; add one with :func:`register_method`."""

from editing.methods.alphaedit import NullSpaceConfig, NullSpaceProjection
from editing.methods.base import Method, Solver, TargetSource, TargetStrategy
from editing.methods.registry import (
    METHODS,
    get_method,
    get_strategy,
    is_null_space,
    method_for_strategy,
    method_names,
    register_method,
    unregister_method,
)
from editing.methods.solvers import LeastSquares, LeastSquaresConfig
from editing.methods.strategies import BackwardSpread, ForwardReplay, OneLayer, PerLayer

_least_squares = LeastSquares()
_forward, _backward, _per_layer, _one_layer = ForwardReplay(), BackwardSpread(), PerLayer(), OneLayer()
register_method("fe", _forward, _least_squares,
                "FE: z at the first edited layer, forward replay gives the later layers' targets")
register_method("memit", _backward, _least_squares,
                "MEMIT: z at the last edited layer, the residual spread backwards over the layers")
register_method("per_layer", _per_layer, _least_squares,
                "z optimised at every edited layer separately (baseline)")
register_method("one_layer", _one_layer, _least_squares,
                "z at the last layer and only that layer edited (baseline)")
# AlphaEdit's solver with every strategy; registered after the least-squares methods, which
# stay each strategy's default method (hyper-parameters that name only a strategy).
_null_space = NullSpaceProjection()
register_method("alphaedit", _backward, _null_space,
                "AlphaEdit: MEMIT's targets, the update confined to the null space of the "
                "preserved keys")
register_method("fe_alphaedit", _forward, _null_space,
                "FE's forward-replay targets with AlphaEdit's null-space solver")
register_method("per_layer_alphaedit", _per_layer, _null_space,
                "per_layer targets with AlphaEdit's null-space solver (baseline)")
register_method("one_layer_alphaedit", _one_layer, _null_space,
                "one_layer targets with AlphaEdit's null-space solver (baseline)")

__all__ = [
    "METHODS",
    "BackwardSpread",
    "ForwardReplay",
    "LeastSquares",
    "LeastSquaresConfig",
    "Method",
    "NullSpaceConfig",
    "NullSpaceProjection",
    "OneLayer",
    "PerLayer",
    "Solver",
    "TargetSource",
    "TargetStrategy",
    "get_method",
    "get_strategy",
    "is_null_space",
    "method_for_strategy",
    "method_names",
    "register_method",
    "unregister_method",
]
