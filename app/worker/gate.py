"""The quality gate's policy: hold a batch that misses the service's thresholds.

A batch that did not take (its facts not learned) or that moved the model too much on
unrelated text should not silently become what every client is served. The worker therefore
measures each new version against its parent before moving the active pointer. What is
measured (efficacy, generalization, chat efficacy, log-probability gain, drift) is the
library's, :mod:`editing.evaluate.gate`; this module holds what the service decides: the 40
fixed probe prompts drift is measured on (``app/worker/probes.json``), the thresholds
(``min_efficacy`` and ``min_chat_efficacy`` percent, ``max_kl`` nats) from the settings and
their per-request overrides, the verdict and its message, and the probe scores remembered
between batches. With no threshold set, the figures are recorded and the batch always passes
(the service behaves as before the gate existed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.serving.runtime import ModelRuntime, Served
from app.store import VersionStore
from editing import (
    EditRequest,
    ParentScores,
    RowScore,
    ScoreRow,
    edited_side,
    eval_batch_for,
    parent_side,
    score_rows,
)

__all__ = [
    "PROBES_FILE",
    "GateRun",
    "GateThresholds",
    "QualityGate",
    "judge",
    "load_probes",
]

log = logging.getLogger(__name__)

PROBES_FILE = Path(__file__).with_name("probes.json")


@dataclass(frozen=True)
class GateThresholds:
    """What a batch must reach to become active; ``None`` means that check is off."""

    min_efficacy: float | None = None
    """Percent of the batch's facts that must succeed on their rewrite prompt."""
    max_kl: float | None = None
    """Largest mean KL(parent ‖ new) on the probe prompts, in nats."""
    min_chat_efficacy: float | None = None
    """Percent of the facts with a question that must succeed on it in chat form."""

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.min_efficacy, self.max_kl, self.min_chat_efficacy))

    def overridden(self, request: Mapping[str, Any] | None) -> GateThresholds:
        """These thresholds with the request's own values where it gives one."""
        if not request:
            return self
        changes = {k: float(v) for k, v in request.items()
                   if k in ("min_efficacy", "max_kl", "min_chat_efficacy") and v is not None}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float | None]:
        return {"min_efficacy": self.min_efficacy, "max_kl": self.max_kl,
                "min_chat_efficacy": self.min_chat_efficacy}


@lru_cache(maxsize=4)
def load_probes(path: Path = PROBES_FILE) -> tuple[str, ...]:
    """The probe prompts (package data); read once per process."""
    prompts = json.loads(path.read_text(encoding="utf-8"))["prompts"]
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"{path} must list non-empty prompts under 'prompts'")
    return tuple(prompts)


def _num(value: float, unit: str = "") -> str:
    text = f"{value:.1f}" if unit == "%" else f"{value:.3g}"
    return (text[:-2] if text.endswith(".0") else text) + unit


def judge(figures: Mapping[str, Any], thresholds: GateThresholds) -> list[str]:
    """Why the figures miss the thresholds, one reason per missed check (empty: passed)."""
    reasons = []
    efficacy, kl = figures.get("efficacy"), figures.get("kl")
    if thresholds.min_efficacy is not None and (efficacy or 0.0) < thresholds.min_efficacy:
        reasons.append(f"efficacy {_num(efficacy or 0.0, '%')} < "
                       f"{_num(thresholds.min_efficacy, '%')} required")
    chat = figures.get("chat_efficacy")
    if thresholds.min_chat_efficacy is not None and chat is not None and chat < thresholds.min_chat_efficacy:
        reasons.append(f"chat efficacy {_num(chat, '%')} < {_num(thresholds.min_chat_efficacy, '%')} required")
    if thresholds.max_kl is not None and kl is not None and kl > thresholds.max_kl:
        reasons.append(f"probe KL {_num(kl)} nats > {_num(thresholds.max_kl)} nats allowed")
    return reasons


@dataclass
class QualityGate:
    """Measures and judges each new batch in the worker (one per worker, thresholds from the
    settings).

    It remembers the probe scores of the last parent and of the last new version: the next
    batch's parent is one of them unless an operator rolled back meanwhile (the store says
    which version a parent is: its parent and delta digest), and reusing them halves the
    gate's cost. The scores are exactly those a fresh pass gives, since a version's weights
    are its parent's plus the same delta bytes."""

    runtime: ModelRuntime
    thresholds: GateThresholds
    store: VersionStore | None = None
    probes: tuple[str, ...] = ()
    _parent: tuple[str, dict[ScoreRow, RowScore]] | None = field(default=None, repr=False)
    _last: tuple[str, str, dict[ScoreRow, RowScore]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.probes:
            self.probes = load_probes()

    def start(self, served: Served, requests: Sequence[EditRequest]) -> GateRun:
        """Score the parent's side of the gate on ``served`` (the parent's weights, before the
        new delta is applied); :meth:`GateRun.finish` scores the new side."""
        started = time.perf_counter()
        before = parent_side(served.model, served.tokenizer, requests, self.probes,
                             eval_batch_for(served.model), self._known(served.version))
        return GateRun(self, served.version, list(requests), before,
                       time.perf_counter() - started)

    def remember(self, parent: str, delta_sha256: str, before: dict[ScoreRow, RowScore],
                 after: dict[ScoreRow, RowScore]) -> None:
        """Keep the probe scores of a gated batch's parent and of its new version: the next
        batch's parent is usually one of them."""
        self._parent = (parent, before)
        self._last = (parent, delta_sha256, after)

    def warm(self, version: str) -> None:
        """Score the probes on ``version`` now, while the worker is idle, so the next batch
        (built on it) runs them on its new side only; a no-op when they are known. Best
        effort: a failure here only means the next gate computes them itself."""
        if self._known(version) is not None:
            return
        rows = [ScoreRow(p) for p in self.probes]
        try:
            with self.runtime.exclusive(version) as served:
                scores = score_rows(served.model, served.tokenizer, rows,
                                    eval_batch_for(served.model))
        except Exception:
            log.warning("probe scores of %s not precomputed", version, exc_info=True)
            return
        self._parent = (version, scores)

    def _known(self, parent: str) -> dict[ScoreRow, RowScore] | None:
        """The probe scores of ``parent`` if an earlier gate computed them."""
        if self._parent is not None and self._parent[0] == parent:
            return self._parent[1]
        if self._last is None or self.store is None:
            return None
        try:
            version = self.store.get_version(parent)
        except Exception:  # a cache miss, never a failed job
            return None
        last_parent, last_sha, scores = self._last
        if version.parent == last_parent and version.delta_sha256 == last_sha:
            return scores
        return None


@dataclass
class GateRun:
    """One batch's gate between its two sides: the parent's scores are taken, the new
    version's not yet."""

    gate: QualityGate
    parent: str
    requests: list[EditRequest]
    before: ParentScores
    seconds: float

    def finish(self, edited: Served, delta_sha256: str,
               requested: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The figures, thresholds, verdict and time of the batch, with ``edited`` holding the
        new version's weights; ``held`` is true when the batch misses a threshold (it is then
        committed but not activated)."""
        started = time.perf_counter()
        gate = self.gate
        thresholds = gate.thresholds.overridden(requested)
        figures, before, after = edited_side(edited.model, edited.tokenizer, self.requests,
                                             gate.probes, self.before,
                                             eval_batch_for(edited.model))
        gate.remember(self.parent, delta_sha256, before, after)
        reasons = judge(figures, thresholds)
        return {
            **figures,
            "thresholds": thresholds.to_dict(),
            "passed": not reasons,
            "held": bool(reasons),
            "reason": "; ".join(reasons) or None,
            "gate_s": round(self.seconds + time.perf_counter() - started, 4),
        }
