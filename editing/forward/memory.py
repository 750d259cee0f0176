"""How many facts one z optimisation group, and how many sequences one evaluation pass, may
hold on the device they run on: the memory plan (``models.plan``) against what is free.

A batch of any size is accepted; it is split into groups that fit. Only a batch whose single
fact cannot fit is refused, with :class:`models.plan.InsufficientMemory` naming what to change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch import nn

from models.placement import module_device, output_device
from models.plan import (
    BUDGET_ENV,
    MemoryPlan,
    device_budget,
    eval_batch_size,
    plan_for_model,
    z_group_size,
)
from models.specs import block

Z_GROUP_CAP = 64
"""Past this many facts a group is no faster per fact, on a CPU or a GPU (bench/z_throughput)."""
EVAL_BATCH_CAP = 32


def _budget(plan: MemoryPlan, device_of: nn.Module | None, model: nn.Module) -> int:
    """Bytes the process may use in all, weights included.

    ``MODELEDIT_MEMORY_BUDGET`` is such a total. Measured free memory already excludes the
    loaded model, so the plan's resident bytes are added back before the plan subtracts them.
    """
    device = module_device(device_of) if device_of is not None else output_device(model)
    budget = device_budget(device)
    return budget if os.environ.get(BUDGET_ENV) else budget + plan.resident


def z_group_for(model: nn.Module, layers: Sequence[int], z_layer: int, n_rows: int) -> int:
    """Facts per z group at ``z_layer`` (``n_rows`` prompts per fact, the essence row aside)."""
    plan = plan_for_model(model, layers, z_layer=z_layer, n_prefixes=max(1, n_rows))
    return min(Z_GROUP_CAP, z_group_size(plan, _budget(plan, block(model, z_layer), model)))


def eval_batch_for(model: nn.Module, layers: Sequence[int] = (0,)) -> int:
    """Sequences per evaluation forward pass."""
    plan = plan_for_model(model, layers)
    return min(EVAL_BATCH_CAP, eval_batch_size(plan, _budget(plan, None, model)))
