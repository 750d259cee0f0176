"""How much of a weight update survives being stored in the model's own dtype.

Adding a small update ``Δ`` to half-precision weights rounds ``W + Δ`` to the nearest
representable number: entries of ``Δ`` much smaller than the spacing of ``W``'s values
(bfloat16 keeps 8 significant bits, float16 11) are partly or wholly lost. These figures let
a benchmark (``bench/parity``) and the edit diagnostics say how much was lost.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def rounding_survival(weight: torch.Tensor, update: torch.Tensor) -> dict[str, float]:
    """``kept`` = ‖round(W + Δ) − W‖ / ‖Δ‖ and ``error`` = ‖round(W + Δ) − W − Δ‖ / ‖Δ‖.

    ``weight`` is in its stored dtype and orientation, ``update`` the same shape in float32.
    ``round`` is what adding the update in place does: the sum in float32, cast to the
    weight's dtype. ``kept`` near 1 and ``error`` near 0 mean the edit landed as computed.
    """
    base = weight.detach().double()
    exact = update.detach().to(weight.device).double()
    stored = (weight.detach().float() + update.detach().to(weight.device).float()).to(weight.dtype)
    landed = stored.double() - base
    norm = float(exact.norm())
    if norm == 0.0:
        return {"kept": 1.0, "error": 0.0}
    return {"kept": float(landed.norm()) / norm, "error": float((landed - exact).norm()) / norm}


@torch.no_grad()
def landed_error(before: torch.Tensor, after: torch.Tensor, update: torch.Tensor) -> float:
    """‖(after − before) − update‖ / ‖update‖: how far the stored change is from the update."""
    exact = update.detach().to(after.device).double()
    norm = float(exact.norm())
    if norm == 0.0:
        return 0.0
    return float((after.detach().double() - before.detach().to(after.device).double() - exact).norm()) / norm


_HELD = "_modeledit_float32"
"""Attribute marking a module whose parameters are held in float32: (hook handles, dtype)."""


def hold_in_float32(module: nn.Module) -> None:
    """Keep ``module``'s parameters in float32 inside a half-precision model (idempotent).

    The module then computes in float32: its input is cast up and its output back down to
    the model's dtype, so the rest of the model is unchanged. Used for the edited MLP output
    matrices: an edit's update is small next to the weights, and bf16 keeps 8 significant
    bits, so adding a one-fact update to bf16 weights loses a third to a half of it on the
    deeper edited layers of the default model (bench/parity); in float32 it lands whole.
    """
    if hasattr(module, _HELD):
        return
    dtype = next(module.parameters()).dtype
    if dtype == torch.float32:
        return
    module.float()

    def cast_in(_module: nn.Module, args: tuple) -> tuple:
        return (args[0].float(), *args[1:])

    def cast_out(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)

    handles = (module.register_forward_pre_hook(cast_in), module.register_forward_hook(cast_out))
    setattr(module, _HELD, (handles, dtype))


def release_float32(module: nn.Module) -> None:
    """Undo :func:`hold_in_float32`: parameters back in the model's dtype, hooks removed.

    Callers restore the exact original bits afterwards (the cast down rounds).
    """
    held = getattr(module, _HELD, None)
    if held is None:
        return
    handles, dtype = held
    for handle in handles:
        handle.remove()
    module.to(dtype)
    delattr(module, _HELD)


def held_dtype(module: nn.Module) -> torch.dtype | None:
    """The model dtype a float32-held module computes for, or None if it is not held."""
    held = getattr(module, _HELD, None)
    return held[1] if held is not None else None
