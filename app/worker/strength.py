"""Per-request edit strength: the λ (``mom2_update_weight``) one batch is solved with.

λ weighs the key statistics of ordinary text against the new facts in the least-squares
solve: a larger λ changes the weights less (more conservative, less drift, lower efficacy),
a smaller one more. A request names a ``strength`` relative to the service's λ (the model
preset with ``MODELEDIT_HPARAMS`` applied) or an absolute ``mom2_update_weight``; the worker
derives the batch's hyper-parameters here and leaves the shared editors untouched between
jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API's schemas import the bounds; keep torch out of that import
    from editing import Editor
    from editing.hparams import EditHparams

__all__ = ["MOM2_BOUNDS", "STRENGTHS", "request_hparams", "replay_weight", "requested", "solved_with"]

STRENGTHS: dict[str, float] = {"conservative": 3.0, "default": 1.0, "strong": 1.0 / 3.0}
"""Factor applied to the service's λ, and to μ (``nullspace_l2``) for the null-space methods,
for each named strength: both are larger for a more conservative edit."""
MOM2_BOUNDS: tuple[float, float] = (1e2, 1e6)
"""Accepted range of an explicit ``mom2_update_weight`` (the default model's preset uses 2e3,
the other presets 1.5e4)."""


def request_hparams(
    base: EditHparams, strength: str | None = None, mom2_update_weight: float | None = None
) -> EditHparams:
    """``base`` with the λ a request asks for (unchanged when it asks for none)."""
    if mom2_update_weight is not None:  # the API checked MOM2_BOUNDS; a replay may not
        return base.replace(mom2_update_weight=float(mom2_update_weight))
    if strength is None or strength == "default":
        return base
    if strength not in STRENGTHS:
        raise ValueError(f"strength {strength!r} unknown; use one of {sorted(STRENGTHS)}")
    factor = STRENGTHS[strength]
    return base.replace(mom2_update_weight=base.mom2_update_weight * factor,
                        nullspace_l2=base.nullspace_l2 * factor)


def requested(strength: str | None, mom2_update_weight: float | None) -> dict[str, Any]:
    """What the request asked for, recorded with the version (empty if nothing); the λ it
    led to is in the version's hparams."""
    out: dict[str, Any] = {}
    if strength is not None:
        out["strength"] = strength
    if mom2_update_weight is not None:
        out["mom2_update_weight"] = mom2_update_weight
    return out


@contextmanager
def solved_with(editor: Editor, strength: str | None,
                mom2_update_weight: float | None) -> Iterator[Editor]:
    """``editor`` solving with the request's λ for the duration of one edit.

    Only λ and μ change, and they enter the solve alone (not the cached statistics, templates or
    z), so swapping the editor's hparams for one call is exact; the worker edits one batch at
    a time, and the original hparams are restored even if the edit fails.
    """
    original = editor.hparams
    editor.hparams = request_hparams(original, strength, mom2_update_weight)
    try:
        yield editor
    finally:
        editor.hparams = original


def replay_weight(hparams: dict[str, Any], diagnostics: dict[str, Any]) -> float | None:
    """The λ to recompute a stored batch with (a revert replays it): its own when its
    request chose one, else ``None`` (the service's current λ, as before)."""
    if not (diagnostics or {}).get("request"):
        return None
    value = (hparams or {}).get("mom2_update_weight")
    return None if value is None else float(value)
