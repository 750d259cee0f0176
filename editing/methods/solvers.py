"""The least-squares solver: the update of one layer from its keys and residuals
(docs/design.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from editing.methods.base import Factors
from editing.solve import regulariser, solve_update

if TYPE_CHECKING:
    from editing.hparams import EditHparams


@dataclass(frozen=True)
class LeastSquaresConfig:
    """What :class:`LeastSquares` reads. Defaults live in ``EditHparams`` (written once)."""

    covariance_weight: float
    """λ on the key statistics C = E[k kᵀ] of ordinary text; larger moves the model less."""
    l2: float
    """μ of the ridge term μI."""

    @classmethod
    def from_hparams(cls, hparams: EditHparams) -> LeastSquaresConfig:
        return cls(covariance_weight=float(hparams.covariance_weight), l2=float(hparams.l2))


class LeastSquares:
    """MEMIT's closed form ``Δ = R Kᵀ (K Kᵀ + λC + C_old + μI)⁻¹`` (:mod:`editing.solve`)."""

    name = "least_squares"
    null_space = False

    def config(self, hparams: EditHparams) -> LeastSquaresConfig:
        return LeastSquaresConfig.from_hparams(hparams)

    def solve(self, keys: torch.Tensor, residuals: torch.Tensor, cov: torch.Tensor,
              old_kkT: torch.Tensor | None, config: LeastSquaresConfig) -> Factors:
        reg = regulariser(cov.to(keys.device), config.covariance_weight, old_kkT, config.l2)
        return solve_update(keys, residuals, reg)
