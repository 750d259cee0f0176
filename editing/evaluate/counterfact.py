"""CounterFact metrics (docs/design.md §8) of an edited model against its unedited base.

Per record: efficacy on the rewrite prompt, generalization on the paraphrases (Success:
target_new has a lower mean per-token NLL than target_true; Accuracy: every target_new token
is the argmax), specificity on the neighborhood prompts (Success: target_true beats
target_new) and locality (KL, top-k overlap) on the same neighborhood prompts. Each metric is
a per-record mean first, then a mean over records, as ROME/MEMIT summarise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.evaluate.chat import USER_KEYS, UserView, joined
from editing.evaluate.data import Record, requests_of
from editing.evaluate.locality import record_locality
from editing.evaluate.metrics import aggregate, all_tokens_hit, mean, mean_nll, prefers
from editing.evaluate.scoring import RowScore, ScoreRow, score_records
from editing.requests import EditRequest
from editing.weights.delta import WeightDelta

METRIC_KEYS: tuple[str, ...] = (
    "efficacy_success",
    "efficacy_accuracy",
    "generalization_success",
    "generalization_accuracy",
    "specificity_success",
    "kl",
    "top1",
    "top5",
    "top10",
)
"""The public report keys (a stable contract: other tools read them)."""


def evaluate_counterfact(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record | EditRequest],
    delta: WeightDelta | None = None,
    batch_size: int = 32,
    per_record: bool = False,
    user_view: bool = True,
) -> dict[str, Any]:
    """CounterFact metrics in percent (``kl`` in nats), with ``counts``; with ``user_view``
    also the chat, generation and name metrics of :mod:`editing.evaluate.chat`.

    ``model`` holds the unedited weights: with a ``delta``, the edited side is scored with it
    applied and the unedited side as found, and the model is left as found. Without one, the
    model is scored as it is (locality is then trivially KL 0, overlap 100). ``per_record``
    adds each record's fractions under ``"records"`` (e.g. to track efficacy per fact).
    """
    requests = requests_of(records)
    if not requests:
        raise ValueError("no records to evaluate")
    rows_of, metrics_of = _rows, counterfact_metrics
    if user_view:
        view = UserView(tokenizer)
        rows_of, metrics_of = joined(view, lambda req: req, _rows, counterfact_metrics)
    metrics = score_records(model, tokenizer, requests, rows_of, metrics_of, delta, batch_size)
    if user_view:
        answers = view.generated(model, requests, delta, batch_size)
        metrics = [m | a for m, a in zip(metrics, answers, strict=True)]
    return summarise(requests, metrics, per_record)


def _rows(req: EditRequest) -> tuple[list[ScoreRow], list[ScoreRow]]:
    """Edited side: every prompt with both targets; unedited side: the locality rows."""
    return _target_rows(req), _locality_rows(req)


def _target_rows(req: EditRequest) -> list[ScoreRow]:
    rows = []
    for prompt in (req.text, *req.paraphrase_prompts, *req.neighborhood_prompts):
        rows.append(ScoreRow(prompt, req.target_new))
        if req.target_true:
            rows.append(ScoreRow(prompt, req.target_true))
    return rows


def _locality_rows(req: EditRequest) -> list[ScoreRow]:
    """Rows whose next-token distribution (after the neighborhood prompt) locality compares:
    the edited side scores them anyway, so only the unedited side spends a pass on them."""
    target = req.target_true or req.target_new
    return [ScoreRow(prompt, target) for prompt in req.neighborhood_prompts]


def counterfact_metrics(
    req: EditRequest, edited: dict[ScoreRow, RowScore], base: dict[ScoreRow, RowScore]
) -> dict[str, float | None]:
    """One record's fractions (0–1; ``kl`` in nats) from scored rows; ``None`` if undefined."""

    def new_wins(prompt: str) -> bool:
        return prefers(nll(prompt, req.target_new), nll(prompt, req.target_true or ""))

    def true_wins(prompt: str) -> bool:
        return prefers(nll(prompt, req.target_true or ""), nll(prompt, req.target_new))

    def nll(prompt: str, target: str) -> float:
        return mean_nll(edited[ScoreRow(prompt, target)].logprobs)

    def hit(prompt: str) -> bool:
        score = edited[ScoreRow(prompt, req.target_new)]
        return all_tokens_hit(score.argmax, score.target_ids)

    has_true = bool(req.target_true)
    paraphrases, neighbors = req.paraphrase_prompts, req.neighborhood_prompts
    out: dict[str, float | None] = {
        "efficacy_success": float(new_wins(req.text)) if has_true else None,
        "efficacy_accuracy": float(hit(req.text)),
        "generalization_success": mean(new_wins(p) for p in paraphrases) if has_true else None,
        "generalization_accuracy": mean(hit(p) for p in paraphrases),
        "specificity_success": mean(true_wins(p) for p in neighbors) if has_true else None,
    }
    return out | record_locality(_locality_rows(req), edited, base)


def summarise(
    requests: Sequence[EditRequest],
    per_record_metrics: list[dict[str, Any]],
    per_record: bool = False,
) -> dict[str, Any]:
    """Means over the records that define each metric; percentages except ``kl`` (nats)."""
    user = USER_KEYS if any("chat_efficacy" in m for m in per_record_metrics) else ()
    out: dict[str, Any] = aggregate(per_record_metrics, (*METRIC_KEYS, *user))
    out["counts"] = {
        "records": len(requests),
        "with_target_true": sum(1 for r in requests if r.target_true),
        "with_question": sum(1 for r in requests if r.question),
        "names_checked": sum(1 for m in per_record_metrics if m.get("names_broken") is not None),
        "rewrite_prompts": len(requests),
        "paraphrase_prompts": sum(len(r.paraphrase_prompts) for r in requests),
        "neighborhood_prompts": sum(len(r.neighborhood_prompts) for r in requests),
    }
    if per_record:
        out["records"] = per_record_metrics
    return out
