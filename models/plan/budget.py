"""Memory budgets: what a device can still give, and how many facts or sequences fit in it.

The formulas (:mod:`models.plan.formulas`) say what one fact or one sequence costs; this module
measures the budget (or reads ``MODELEDIT_MEMORY_BUDGET``) and divides, refusing with
:class:`InsufficientMemory` and what to change when not even one fits.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from models.plan.formulas import GIB, MemoryPlan

DEFAULT_BUDGET_GIB = 80.0
"""An H100 (80 GB); pass ``--budget-gib`` for another device."""
BUDGET_ENV = "MODELEDIT_MEMORY_BUDGET"


class InsufficientMemory(ValueError):
    """Not even one fact (or one sequence) fits the budget; the message says what to change."""


def gib(n: int) -> str:
    """Bytes as GiB with two decimals, the unit of every message and table."""
    return f"{n / GIB:.2f}"


def z_group_size(plan: MemoryPlan, budget_bytes: int) -> int:
    """The most facts whose z optimisation fits ``budget_bytes`` next to the resident bytes."""
    return _how_many(plan, plan.z_per_fact, budget_bytes, "one fact's z optimisation",
                     "fewer context prefixes (hparam template_prefixes)")


def eval_batch_size(plan: MemoryPlan, budget_bytes: int) -> int:
    """The most sequences one evaluation pass can score within ``budget_bytes``."""
    return _how_many(plan, plan.eval_per_seq, budget_bytes, "one evaluation sequence",
                     "shorter rows")


def _how_many(plan: MemoryPlan, each: int, budget_bytes: int, what: str, local: str) -> int:
    """Items of ``each`` bytes that fit beside the resident bytes; refuse when not one does."""
    free = budget_bytes - plan.resident
    n = free // each if free > 0 else 0
    if n < 1:
        raise InsufficientMemory(
            f"{what} needs {gib(each)} GiB beside {gib(plan.resident)} GiB of weights and "
            f"revert copies, but the budget is {gib(budget_bytes)} GiB. {_remedies(plan, local)}"
        )
    return int(n)


def _remedies(plan: MemoryPlan, local: str) -> str:
    options = ["a smaller dtype (--dtype bf16)"] if plan.dtype == "float32" else []
    options += [local, "a device with more memory",
                f"a larger budget ({BUDGET_ENV} / --memory-budget) if the device has it"]
    return "Use " + ", ".join(options) + "."


def parse_bytes(text: str) -> int:
    """``"40GiB"``, ``"40G"``, ``"512MiB"`` or a plain byte count."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. 40GiB, 512MiB or a byte count")
    scale = 1024 ** "_KMGT".index(match.group(2).upper() or "_")
    return int(float(match.group(1)) * scale)


def device_budget(device: torch.device | str, margin_fraction: float = 0.05) -> int:
    """Bytes this process can still use on ``device``, less a safety margin.

    ``MODELEDIT_MEMORY_BUDGET`` (e.g. ``40GiB``) overrides the measurement. CUDA: free memory
    plus what PyTorch's allocator has reserved but not used, less max(512 MiB, 5% of the
    device). CPU: available RAM (psutil if installed, else /proc/meminfo), less the same.
    """
    if os.environ.get(BUDGET_ENV):
        return parse_bytes(os.environ[BUDGET_ENV])
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        free = total = _available_ram()
    return max(0, free - max(512 * 1024**2, int(margin_fraction * total)))


def _available_ram() -> int:
    try:
        import psutil  # optional: not a dependency
    except ImportError:
        meminfo = Path("/proc/meminfo")
        if not meminfo.exists():
            raise RuntimeError(
                f"cannot measure free RAM without psutil or /proc/meminfo; set {BUDGET_ENV}"
            ) from None
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/meminfo has no MemAvailable; set {BUDGET_ENV}") from None
    return int(psutil.virtual_memory().available)
