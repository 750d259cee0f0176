"""The least-squares solve of one layer and the statistics it is regularised with.

``closed_form.py`` (``Δ = R Kᵀ (K Kᵀ + λC + C_old + μI)⁻¹`` in float64) and ``stats.py`` (C,
the second moment of ordinary text's keys, computed once per model and corpus and shared by
every method). The methods' solvers (:mod:`editing.methods`) call these; nothing here knows
about prompts or targets.
"""

from editing.solve.closed_form import regulariser, solve_update

__all__ = ["regulariser", "solve_update"]
