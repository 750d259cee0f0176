"""Solvers: the update of one layer from its keys and residuals (docs/design.md §5)."""

from __future__ import annotations

from typing import Any

import torch

from editing.methods.base import Factors
from editing.solve import regulariser, solve_update


class LeastSquares:
    """MEMIT's closed form ``Δ = R Kᵀ (K Kᵀ + λC + C_old + μI)⁻¹`` (:mod:`editing.solve`)."""

    name = "least_squares"

    def solve(self, keys: torch.Tensor, residuals: torch.Tensor, cov: torch.Tensor,
              old_kkT: torch.Tensor | None, hparams: Any) -> Factors:
        reg = regulariser(cov.to(keys.device), hparams.mom2_update_weight, old_kkT, hparams.l2)
        return solve_update(keys, residuals, reg)
