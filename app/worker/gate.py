"""The quality gate: measure a batch before it becomes active, and hold it if it misses.

A batch that did not take (its facts not learned) or that moved the model too much on
unrelated text should not silently become what every client is served. The worker therefore
measures each new version against its parent before moving the active pointer:

* **efficacy** (percent of facts): on the rewrite prompt, a fact with ``target_true`` succeeds
  when ``target_new`` is more likely than ``target_true`` per token (lower mean NLL, the
  CounterFact definition); a fact without one succeeds when every ``target_new`` token is the
  model's argmax under teacher forcing (the answer it would give greedily);
* **generalization** (percent): the same test on the paraphrase prompts that came with the
  facts (per fact the mean over its paraphrases; ``None`` when no fact has any);
* **logprob_gain** (nats): mean over facts of the change of ``target_new``'s mean per-token
  log-probability on the rewrite prompt, new version minus parent (how far the edit moved it);
* **chat_efficacy** (percent of the facts that carry a ``question``; ``None`` when none does):
  the question as the user's message in the model's chat template, the efficacy test on
  the assistant's first words (what a chat user asks, :mod:`editing.evaluate.chat`);
* **drift** on the 40 fixed probe prompts of ``app/worker/probes.json``: mean KL(parent ‖ new) of the
  next-token distribution in nats, and top-1 agreement with the parent in percent.

Scoring reuses ``editing.evaluate`` (batched teacher-forced rows, KL, top-k): both sides come
from one model, the delta applied and bit-identically reverted, so the gate needs no second
copy of the weights. Thresholds (``min_efficacy`` and ``min_chat_efficacy`` percent, ``max_kl``
nats) come from the
settings and may be overridden per request; with none, the figures are recorded and the batch
always passes (the service behaves as before the gate existed).
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

from torch import nn
from transformers import PreTrainedTokenizerBase

from app.serving.runtime import ModelRuntime
from app.store import VersionStore
from editing.delta import WeightDelta
from editing.evaluate.generation import answer_sep, render_chat
from editing.evaluate.locality import record_locality
from editing.evaluate.metrics import all_tokens_hit, mean, mean_nll, percent, prefers
from editing.evaluate.scoring import RowScore, ScoreRow, score_rows, with_delta
from editing.memory import eval_batch_for
from editing.requests import EditRequest

__all__ = [
    "PROBES_FILE",
    "GateThresholds",
    "QualityGate",
    "judge",
    "load_probes",
    "measure",
    "measure_probed",
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


def _fact_rows(req: EditRequest, chat: str | None = None) -> list[ScoreRow]:
    """The rows of the rewrite and paraphrase prompts, and of ``chat`` (the rendered question)."""
    rows = []
    for prompt in (req.text, *req.paraphrase_prompts, *([chat] if chat else [])):
        sep = answer_sep(prompt) if prompt == chat else " "
        rows.append(ScoreRow(prompt, req.target_new, sep))
        if req.target_true:
            rows.append(ScoreRow(prompt, req.target_true, sep))
    return rows


def _succeeds(req: EditRequest, prompt: str, scores: Mapping[ScoreRow, RowScore], sep: str = " ") -> bool:
    """The module docstring's definition of one fact succeeding on one prompt."""
    new = scores[ScoreRow(prompt, req.target_new, sep)]
    if req.target_true:
        true = scores[ScoreRow(prompt, req.target_true, sep)]
        return prefers(mean_nll(new.logprobs), mean_nll(true.logprobs))
    return all_tokens_hit(new.argmax, new.target_ids)


def measure(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    delta: WeightDelta,
    probes: Sequence[str],
    batch_size: int = 32,
) -> dict[str, Any]:
    """The gate's figures for ``delta`` on top of the weights ``model`` holds (the parent);
    the model is left as found."""
    return measure_probed(model, tokenizer, requests, delta, probes, batch_size)[0]


def measure_probed(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    delta: WeightDelta,
    probes: Sequence[str],
    batch_size: int = 32,
    parent_probes: Mapping[ScoreRow, RowScore] | None = None,
) -> tuple[dict[str, Any], dict[ScoreRow, RowScore], dict[ScoreRow, RowScore]]:
    """:func:`measure`, also returning the probe scores of the parent and of the new version.

    ``parent_probes``: the parent's probe scores from an earlier gate (the new version of the
    previous batch is usually the next parent), so only the new side runs the probes: the
    probes are most of the gate's cost.
    """
    probe_rows = [ScoreRow(p) for p in probes]
    rewrite_new = [ScoreRow(r.text, r.target_new) for r in requests]
    chats = {r: render_chat(tokenizer, r.question) for r in requests if r.question}
    fact_rows = [row for r in requests for row in _fact_rows(r, chats.get(r))]
    reuse = parent_probes is not None and all(r in parent_probes for r in probe_rows)
    # probes and facts in separate passes: in one, the short probes sharing a batch with the
    # long paraphrase prompts would be padded to their length (a third more compute)
    base = score_rows(model, tokenizer, rewrite_new, batch_size)
    base.update({r: parent_probes[r] for r in probe_rows} if reuse  # type: ignore[index]
                else score_rows(model, tokenizer, probe_rows, batch_size))
    with with_delta(model, delta):
        edited = score_rows(model, tokenizer, fact_rows, batch_size)
        edited.update(score_rows(model, tokenizer, probe_rows, batch_size))
    efficacy = percent(float(_succeeds(r, r.text, edited)) for r in requests)
    generalization = percent(
        mean(float(_succeeds(r, p, edited)) for p in r.paraphrase_prompts)
        for r in requests
    )
    chat_efficacy = percent(float(_succeeds(r, c, edited, answer_sep(c))) for r, c in chats.items())
    gain = mean(
        float(edited[row].logprobs.double().mean() - base[row].logprobs.double().mean())
        for row in rewrite_new
    )
    drift = record_locality(probe_rows, edited, base)
    figures = {
        "efficacy": efficacy,
        "generalization": generalization,
        "chat_efficacy": chat_efficacy,
        "logprob_gain": gain,
        "kl": drift["kl"],
        "top1_agreement": None if drift["top1"] is None else 100.0 * drift["top1"],
        "facts": len(requests),
        "paraphrases": sum(len(r.paraphrase_prompts) for r in requests),
        "probes": len(probe_rows),
        "parent_probes_reused": reuse,
    }
    return figures, {r: base[r] for r in probe_rows}, {r: edited[r] for r in probe_rows}


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

    def check(
        self,
        parent: str,
        requests: Sequence[EditRequest],
        delta: WeightDelta,
        requested: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The figures, thresholds, verdict and time of one batch, as stored with its version.

        ``held`` is true when the batch misses a threshold: it is committed but not activated.
        """
        started = time.perf_counter()
        thresholds = self.thresholds.overridden(requested)
        known = self._known(parent)
        with self.runtime.exclusive(parent) as served:
            figures, before, after = measure_probed(
                served.model, served.tokenizer, requests, delta, self.probes,
                eval_batch_for(served.model), known,
            )
        self._parent = (parent, before)
        self._last = (parent, delta.sha256, after)
        reasons = judge(figures, thresholds)
        return {
            **figures,
            "thresholds": thresholds.to_dict(),
            "passed": not reasons,
            "held": bool(reasons),
            "reason": "; ".join(reasons) or None,
            "gate_s": round(time.perf_counter() - started, 4),
        }

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
