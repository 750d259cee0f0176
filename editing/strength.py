"""Edit strength: the hyper-parameters a batch is solved with when it asks to be written
harder or more gently.

λ (``covariance_weight``) weighs the key statistics of ordinary text against the new facts
in the least-squares solve, and μ (``nullspace.l2``) plays that part for the null-space
methods: both are larger for a more conservative edit (less drift, lower efficacy). They
enter the solve alone (not the statistics, the templates or z), so a strength is a new
:class:`EditHparams` for one call (``Editor.edit(..., hparams=with_strength(...))``), never a
change to a shared editor.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the service's schemas import this module's callers; keep torch out
    from editing.hparams import EditHparams

__all__ = ["STRENGTHS", "with_strength"]

STRENGTHS: dict[str, float] = {"conservative": 3.0, "default": 1.0, "strong": 1.0 / 3.0}
"""Factor applied to λ, and to μ (``nullspace.l2``) for the null-space methods, for each
named strength: both are larger for a more conservative edit."""


def with_strength(
    base: EditHparams, strength: str | None = None, covariance_weight: float | None = None,
) -> EditHparams:
    """``base`` with the λ a request asks for (``base`` itself when it asks for none): an
    explicit λ, or a named strength scaling λ and μ."""
    if covariance_weight is not None:
        return base.replace(covariance_weight=float(covariance_weight))
    if strength is None or strength == "default":
        return base
    if strength not in STRENGTHS:
        raise ValueError(f"strength {strength!r} unknown; use one of {sorted(STRENGTHS)}")
    factor = STRENGTHS[strength]
    return base.replace(covariance_weight=base.covariance_weight * factor,
                        nullspace=dataclasses.replace(base.nullspace, l2=base.nullspace.l2 * factor))
