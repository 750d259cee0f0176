"""The figures a batch of edits is judged by before it is served: the service's quality gate.

Measured on one model holding the parent's weights, with the new delta applied and then
bit-identically reverted, so no second copy of the weights is needed:

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
* **drift** on the probe prompts the caller gives: mean KL(parent ‖ new) of the next-token
  distribution in nats, and top-1 agreement with the parent in percent.

The scoring is the evaluation's own (batched teacher-forced rows, KL, top-k), so a figure
here is the figure ``python -m editing evaluate`` gives for the same rows. What passes, the
probe prompts and the thresholds are the service's (``app/worker/gate.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.evaluate.locality import record_locality
from editing.evaluate.metrics import all_tokens_hit, mean, mean_nll, percent, prefers
from editing.evaluate.scoring import RowScore, ScoreRow, score_rows, with_delta
from editing.forward.chat import answer_sep, chat_prompt
from editing.requests import EditRequest
from editing.weights.delta import WeightDelta

__all__ = ["ParentScores", "edited_side", "measure", "measure_probed", "parent_side"]


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
    before = parent_side(model, tokenizer, requests, probes, batch_size, parent_probes)
    with with_delta(model, delta):
        return edited_side(model, tokenizer, requests, probes, before, batch_size)


@dataclass(frozen=True)
class ParentScores:
    """What the gate scores on the parent's weights, before the new delta is applied."""

    scores: dict[ScoreRow, RowScore]
    probes_reused: bool


def parent_side(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    probes: Sequence[str],
    batch_size: int = 32,
    parent_probes: Mapping[ScoreRow, RowScore] | None = None,
) -> ParentScores:
    """The parent's scores of the facts' rewrite prompts and of the probes (``parent_probes``
    when they hold every probe), on the weights ``model`` holds now (the parent's).

    Split from :func:`edited_side` so a caller that keeps the new weights applied (the
    service's worker applies a delta once, then gates and commits it) measures the parent
    first and never applies and reverts the delta for the gate alone."""
    probe_rows = [ScoreRow(p) for p in probes]
    rewrite_new = [ScoreRow(r.text, r.target_new) for r in requests]
    reuse = parent_probes is not None and all(r in parent_probes for r in probe_rows)
    # probes and facts in separate passes: in one, the short probes sharing a batch with the
    # long paraphrase prompts would be padded to their length (a third more compute)
    base = score_rows(model, tokenizer, rewrite_new, batch_size)
    base.update({r: parent_probes[r] for r in probe_rows} if reuse  # type: ignore[index]
                else score_rows(model, tokenizer, probe_rows, batch_size))
    return ParentScores(base, reuse)


def edited_side(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    probes: Sequence[str],
    before: ParentScores,
    batch_size: int = 32,
) -> tuple[dict[str, Any], dict[ScoreRow, RowScore], dict[ScoreRow, RowScore]]:
    """The gate's figures, with ``model`` holding the new version's weights and ``before``
    from :func:`parent_side`; also the probe scores of the parent and of the new version."""
    probe_rows = [ScoreRow(p) for p in probes]
    rewrite_new = [ScoreRow(r.text, r.target_new) for r in requests]
    chats = {r: chat_prompt(tokenizer, r.question) for r in requests if r.question}
    fact_rows = [row for r in requests for row in _fact_rows(r, chats.get(r))]
    base = before.scores
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
        "parent_probes_reused": before.probes_reused,
    }
    return figures, {r: base[r] for r in probe_rows}, {r: edited[r] for r in probe_rows}
