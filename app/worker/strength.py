"""Per-request edit strength in the worker: what a version records of its request, and the
λ a revert replays a batch with (the bounds the API accepts are ``COVARIANCE_WEIGHT_BOUNDS``
in :mod:`app.api.schemas.edits`).

Stored records keep the names they have always had (``mom2_update_weight`` in a version's
hparams and its ``diagnostics.request``: :data:`editing.hparams.STORED_NAMES`).

The scaling itself (what a strength means for the hyper-parameters) is the library's:
:func:`editing.strength.with_strength`.
"""

from __future__ import annotations

from typing import Any

from editing import STORED_NAMES, STRENGTHS

__all__ = ["STRENGTHS", "replay_weight", "requested"]


def requested(strength: str | None, covariance_weight: float | None) -> dict[str, Any]:
    """What the request asked for, recorded with the version (empty if nothing) under the
    stored name of λ, like the version's hparams (where the λ it led to is)."""
    out: dict[str, Any] = {}
    if strength is not None:
        out["strength"] = strength
    if covariance_weight is not None:
        out[STORED_NAMES["covariance_weight"]] = covariance_weight
    return out


def replay_weight(hparams: dict[str, Any], diagnostics: dict[str, Any]) -> float | None:
    """The λ to recompute a stored batch with (a revert replays it): its own when its
    request chose one, else ``None`` (the service's current λ, as before)."""
    if not (diagnostics or {}).get("request"):
        return None
    value = (hparams or {}).get(STORED_NAMES["covariance_weight"])
    return None if value is None else float(value)
