"""AlphaEdit's null-space projection as a solver (Fang et al., ICLR 2025).

Why: MEMIT's λC term only *discourages* moving the keys of ordinary text; AlphaEdit removes
that trade-off by confining the update to the (approximate) null space of those keys. With
C = E[k kᵀ] the key statistics the least-squares solver uses, U₀ are C's eigenvectors whose
eigenvalues are below ``nullspace.threshold`` and P = U₀U₀ᵀ. The reference solves

    Δᵀ = (P (K Kᵀ + C_old) + μI)⁻¹ P K Rᵀ

(``algs/alphaedit`` of the FE repository: threshold 0.02 on the singular values of the *mean*
second moment, as ours is; μ = ``L2`` = 10; C_old = Σ K_p K_pᵀ of earlier batches; no λC
term). Every column of Δᵀ lies in range(P) (``μΔᵀ = P(K Rᵀ − AΔᵀ)``), so with Δᵀ = U₀Y the
system reduces to the symmetric r×r one ``(U₀ᵀ A U₀ + μI) Y = U₀ᵀ K Rᵀ``, A = K Kᵀ + C_old:
the same solution, better conditioned, and cheaper. Δ = R · (U₀ (U₀ᵀAU₀ + μI)⁻¹ U₀ᵀ K)ᵀ is
kept factored (rank ≤ N) like :class:`editing.methods.solvers.LeastSquares`.

U₀ is an eigendecomposition of a d_k×d_k matrix: computed once per (statistics, threshold) and
kept in the solver instance, not per edit.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from editing.methods.base import Factors

if TYPE_CHECKING:
    from editing.hparams import EditHparams


@dataclass(frozen=True)
class NullSpaceConfig:
    """What :class:`NullSpaceProjection` reads. Defaults live in ``EditHparams`` (written
    once: ``nullspace.threshold`` 0.02, ``nullspace.l2`` 10)."""

    threshold: float
    """Eigenvalues of E[k kᵀ] below it span the null space the update is confined to."""
    l2: float
    """μ: keeps U₀ᵀAU₀ + μI invertible when N < rank P; must be positive."""

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"nullspace_l2 must be positive, got {self.l2}")

    @classmethod
    def from_hparams(cls, hparams: EditHparams) -> NullSpaceConfig:
        return cls(threshold=float(hparams.nullspace.threshold), l2=float(hparams.nullspace.l2))


def null_space_basis(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """(d_k, r) float64 orthonormal eigenvectors of the symmetric ``cov`` whose eigenvalues
    are below ``threshold`` (C is PSD, so these are the reference's small singular values)."""
    values, vectors = torch.linalg.eigh(cov.double())
    return vectors[:, values < threshold].contiguous()


def projector(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = U₀U₀ᵀ (d_k, d_k), float64: symmetric, idempotent, zero on C's large directions."""
    basis = null_space_basis(cov, threshold)
    return basis @ basis.T


class NullSpaceProjection:
    """AlphaEdit's update: least squares on the new (and earlier edits') keys, restricted to
    the null space of the preserved keys' statistics. Reads :class:`NullSpaceConfig`
    (``nullspace.threshold``, ``nullspace.l2``); ``covariance_weight`` and ``l2`` do not
    enter (P replaces λC)."""

    name = "null_space_projection"
    null_space = True
    """Its strength is μ, not λ (:func:`editing.methods.is_null_space`)."""

    def __init__(self) -> None:
        # (id of the statistics tensor, threshold) -> (weak reference to it, U₀). An entry
        # lives exactly as long as its statistics (the Editor's CovarianceCache keeps them),
        # so a d_k×r basis is never held for statistics nobody uses any more.
        self._bases: dict[tuple[int, float], tuple[weakref.ref, torch.Tensor]] = {}

    def basis(self, cov: torch.Tensor, threshold: float) -> torch.Tensor:
        """U₀ for ``cov``, from the cache when this very tensor was seen with ``threshold``."""
        key = (id(cov), float(threshold))
        hit = self._bases.get(key)
        if hit is not None and hit[0]() is cov:
            return hit[1]
        basis = null_space_basis(cov, threshold)
        self._bases[key] = (weakref.ref(cov), basis)
        weakref.finalize(cov, self._bases.pop, key, None)
        return basis

    def config(self, hparams: EditHparams) -> NullSpaceConfig:
        return NullSpaceConfig.from_hparams(hparams)

    def solve(self, keys: torch.Tensor, residuals: torch.Tensor, cov: torch.Tensor,
              old_kkT: torch.Tensor | None, config: NullSpaceConfig) -> Factors:
        u0 = self.basis(cov, config.threshold).to(keys.device)
        return null_space_update(keys, residuals, u0, old_kkT, config.l2)


def null_space_update(keys: torch.Tensor, residuals: torch.Tensor, u0: torch.Tensor,
                      old_kkT: torch.Tensor | None, mu: float) -> Factors:
    """Factors ``(R, (U₀ (U₀ᵀAU₀ + μI)⁻¹ U₀ᵀ K)ᵀ)`` in float64; A = K Kᵀ + C_old."""
    k = keys.double()
    r = residuals.double()
    if u0.shape[1] == 0:  # nothing may change: every direction is preserved
        return r, torch.zeros(k.shape[1], k.shape[0], dtype=torch.float64, device=k.device)
    uk = u0.T @ k  # (r, N)
    inner = uk @ uk.T + mu * torch.eye(u0.shape[1], dtype=torch.float64, device=k.device)
    if old_kkT is not None:
        inner = inner + u0.T @ old_kkT.to(k.device, torch.float64) @ u0
    solved = torch.linalg.solve(inner, uk)  # (r, N)
    return r, (u0 @ solved).T
