"""The closed-form update satisfies its normal equations."""

from __future__ import annotations

import torch

from editing.solve.closed_form import regulariser, solve_update


def test_solution_satisfies_normal_equations() -> None:
    gen = torch.Generator().manual_seed(0)
    d_k, d, n = 24, 16, 5
    keys = torch.randn(d_k, n, generator=gen, dtype=torch.float64)
    residuals = torch.randn(d, n, generator=gen, dtype=torch.float64)
    samples = torch.randn(d_k, 200, generator=gen, dtype=torch.float64)
    cov = samples @ samples.T / 200
    old = torch.randn(d_k, 3, generator=gen, dtype=torch.float64)
    reg = regulariser(cov, 10.0, old @ old.T, l2=0.1)
    left, right = solve_update(keys, residuals, reg)
    delta = left @ right
    # d/dΔ of ‖ΔK − R‖² + tr(Δ reg Δᵀ) = 0  ⇔  Δ (K Kᵀ + reg) = R Kᵀ
    torch.testing.assert_close(delta @ (keys @ keys.T + reg), residuals @ keys.T)
    assert left.shape == (d, n) and right.shape == (n, d_k)


def test_weak_regulariser_reaches_the_targets() -> None:
    gen = torch.Generator().manual_seed(1)
    keys = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    residuals = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    reg = regulariser(torch.eye(32, dtype=torch.float64), 1e-9)
    left, right = solve_update(keys, residuals, reg)
    torch.testing.assert_close((left @ right) @ keys, residuals, atol=1e-6, rtol=1e-6)


def test_old_keys_term_protects_earlier_keys() -> None:
    """With earlier keys in the regulariser, the update barely moves their outputs."""
    gen = torch.Generator().manual_seed(2)
    d_k = 32
    old_keys = torch.randn(d_k, 6, generator=gen, dtype=torch.float64)
    new_keys = old_keys[:, :3] + 0.3 * torch.randn(d_k, 3, generator=gen, dtype=torch.float64)
    residuals = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    cov = torch.eye(d_k, dtype=torch.float64)
    plain = regulariser(cov, 1.0)
    kept = regulariser(cov, 1.0, 1000 * old_keys @ old_keys.T)
    moved_plain = (torch.mul(*solve_update(new_keys, residuals, plain)[:1], 1) @
                   solve_update(new_keys, residuals, plain)[1] @ old_keys).norm()
    left, right = solve_update(new_keys, residuals, kept)
    moved_kept = (left @ right @ old_keys).norm()
    assert moved_kept < 0.2 * moved_plain
