"""How much of a weight update survives being stored in the model's own dtype.

Adding a small update ``Δ`` to half-precision weights rounds ``W + Δ`` to the nearest
representable number: entries of ``Δ`` much smaller than the spacing of ``W``'s values
(bfloat16 keeps 8 significant bits, float16 11) are partly or wholly lost. These figures let
a benchmark (``bench/parity``) and the edit diagnostics say how much was lost.
"""

from __future__ import annotations

import torch


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
