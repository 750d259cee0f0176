"""The closed-form MEMIT update of one layer (docs/design.md §5).

Minimising ``‖ΔK − R‖² + λ·tr(Δ C Δᵀ) + tr(Δ C_old Δᵀ) + μ‖Δ‖²`` over Δ gives
``Δ = R Kᵀ (K Kᵀ + λC + C_old + μI)⁻¹``: the new keys map to the residuals while keys of
ordinary text (C) and of earlier edits (C_old) move as little as possible. Solved in float64
(the Gram matrix is badly conditioned in float32), never by explicit inversion, and returned
as the factors ``R`` and ``(A⁻¹K)ᵀ`` because Δ has rank ≤ N.
"""

from __future__ import annotations

import torch


def regulariser(
    cov: torch.Tensor, mom2_weight: float, old_kkT: torch.Tensor | None = None, l2: float = 0.0
) -> torch.Tensor:
    """``λC + C_old + μI`` in float64."""
    reg = mom2_weight * cov.double()
    if old_kkT is not None:
        reg = reg + old_kkT.to(reg.device, torch.float64)
    if l2:
        reg = reg + l2 * torch.eye(reg.shape[0], dtype=torch.float64, device=reg.device)
    return reg


def solve_update(
    keys: torch.Tensor,
    residuals: torch.Tensor,
    reg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(left, right)`` with ``Δ = left @ right``.

    ``keys`` is (d_k, N), ``residuals`` (d, N), ``reg`` the (d_k, d_k) regulariser. ``left`` is
    R (d, N) and ``right`` is ``(A⁻¹ K)ᵀ`` (N, d_k), both float64.
    """
    k = keys.double().to(reg.device)
    r = residuals.double().to(reg.device)
    gram = k @ k.T + reg
    solved = torch.linalg.solve(gram, k)  # A⁻¹K, (d_k, N); A is symmetric
    return r, solved.T
