"""How much memory editing a model needs, per process, before any weights are downloaded.

Four parts, one job each: :mod:`~models.plan.formulas` (bytes per stage from a model's
shapes), :mod:`~models.plan.budget` (what a device can give, and how many facts fit),
:mod:`~models.plan.configs` (configs by name, without weights) and :mod:`~models.plan.cli`
(``python -m models.plan``). The public names are re-exported here.
"""

from models.catalog import parse_layers
from models.plan.budget import (
    BUDGET_ENV,
    DEFAULT_BUDGET_GIB,
    InsufficientMemory,
    device_budget,
    eval_batch_size,
    gib,
    parse_bytes,
    z_group_size,
)
from models.plan.cli import compare, describe, main
from models.plan.configs import (
    CONFIGS_DIR,
    ConfigNotFound,
    config_from_json,
    layers_for_config,
    load_config,
    shipped_configs,
)
from models.plan.formulas import (
    EDIT_COPY_SETS,
    GIB,
    SOLVE_MATRICES,
    MemoryPlan,
    PlanSettings,
    Shapes,
    forward_bytes_per_token,
    grad_bytes_per_token,
    meta_model,
    plan_for_config,
    plan_for_model,
    plan_for_shapes,
    shapes_of,
)

__all__ = [
    "BUDGET_ENV", "CONFIGS_DIR", "DEFAULT_BUDGET_GIB", "EDIT_COPY_SETS", "GIB", "SOLVE_MATRICES",
    "ConfigNotFound", "InsufficientMemory", "MemoryPlan", "PlanSettings", "Shapes", "compare",
    "config_from_json", "layers_for_config", "describe", "device_budget", "eval_batch_size",
    "forward_bytes_per_token", "gib", "grad_bytes_per_token", "load_config", "main",
    "meta_model", "parse_bytes", "parse_layers", "plan_for_config", "plan_for_model",
    "plan_for_shapes", "shapes_of", "shipped_configs", "z_group_size",
]
