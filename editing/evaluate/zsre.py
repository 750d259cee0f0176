"""zsRE metrics (docs/design.md §8): per-token accuracy, as the MEMIT paper reports them.

zsRE has no ``target_true``, so there is no Success metric: efficacy and generalization are
the fraction of ``target_new`` tokens that are the argmax under teacher forcing on the
question and its paraphrase. Specificity compares, on the unrelated neighborhood question
teacher-forced on its dataset answer, the edited model's argmax tokens with the *unedited*
model's (an edit should leave the model's own behaviour alone, right or wrong);
``zsre_specificity_gold`` is the edited model's accuracy against the answer itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.evaluate.chat import USER_KEYS, UserView, joined
from editing.evaluate.counterfact import METRIC_KEYS
from editing.evaluate.data import Record
from editing.evaluate.locality import record_locality
from editing.evaluate.metrics import aggregate, all_tokens_hit, mean, token_accuracy
from editing.evaluate.scoring import RowScore, ScoreRow, score_records
from editing.requests import EditRequest
from editing.weights.delta import WeightDelta

ZSRE_KEYS: tuple[str, ...] = (
    "zsre_efficacy",
    "zsre_generalization",
    "zsre_specificity",
    "zsre_specificity_gold",
)


def evaluate_zsre(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record | EditRequest],
    delta: WeightDelta | None = None,
    batch_size: int = 32,
    per_record: bool = False,
    user_view: bool = True,
) -> dict[str, Any]:
    """zsRE metrics in percent, plus the CounterFact keys that zsRE defines (accuracy, KL,
    top-k; the Success keys are ``None``), with ``counts``.

    Same model contract as :func:`~editing.evaluate.counterfact.evaluate_counterfact`:
    ``model`` holds the unedited weights and is left as found.
    """
    cases = [r if isinstance(r, Record) else Record(i, r) for i, r in enumerate(records)]
    if not cases:
        raise ValueError("no records to evaluate")
    rows_of, metrics_of = _rows, zsre_metrics
    if user_view:  # the question is the user's message
        view = UserView(tokenizer)
        rows_of, metrics_of = joined(view, lambda case: case.request, _rows, zsre_metrics)
    metrics = score_records(model, tokenizer, cases, rows_of, metrics_of, delta, batch_size)
    if user_view:
        answers = view.generated(model, [c.request for c in cases], delta, batch_size)
        metrics = [m | a for m, a in zip(metrics, answers, strict=True)]
    return _summarise(cases, metrics, per_record)


def _rows(case: Record) -> tuple[list[ScoreRow], list[ScoreRow]]:
    """Edited side: question and paraphrases on target_new, plus the neighborhood rows, which
    the unedited side scores too (for specificity and locality)."""
    req = case.request
    edited = [ScoreRow(p, req.target_new) for p in (req.text, *req.paraphrase_prompts)]
    return edited + _locality_rows(case), _locality_rows(case)


def _neighborhood_rows(case: Record) -> list[ScoreRow]:
    """Neighborhood questions teacher-forced on their dataset answers."""
    return [
        ScoreRow(p, a)
        for p, a in zip(case.request.neighborhood_prompts, case.neighborhood_answers, strict=False)
    ]


def _locality_rows(case: Record) -> list[ScoreRow]:
    """One row per neighborhood question (its answer row, or the bare question without one):
    both sides score it, for specificity and for the next-token locality metrics."""
    answered = _neighborhood_rows(case)
    return answered + [ScoreRow(p) for p in case.request.neighborhood_prompts[len(answered) :]]


def zsre_metrics(
    case: Record, edited: dict[ScoreRow, RowScore], base: dict[ScoreRow, RowScore]
) -> dict[str, float | None]:
    """One record's fractions (0–1; ``kl`` in nats) from scored rows; ``None`` if undefined."""
    req = case.request

    def acc(prompt: str) -> float:
        score = edited[ScoreRow(prompt, req.target_new)]
        return token_accuracy(score.argmax, score.target_ids)

    def hit(prompt: str) -> bool:
        score = edited[ScoreRow(prompt, req.target_new)]
        return all_tokens_hit(score.argmax, score.target_ids)

    neighborhood = _neighborhood_rows(case)
    out: dict[str, float | None] = {
        "zsre_efficacy": acc(req.text),
        "zsre_generalization": mean(acc(p) for p in req.paraphrase_prompts),
        "zsre_specificity": mean(
            token_accuracy(edited[row].argmax, base[row].argmax) for row in neighborhood
        ),
        "zsre_specificity_gold": mean(
            token_accuracy(edited[row].argmax, edited[row].target_ids) for row in neighborhood
        ),
        "efficacy_success": None,
        "efficacy_accuracy": float(hit(req.text)),
        "generalization_success": None,
        "generalization_accuracy": mean(hit(p) for p in req.paraphrase_prompts),
        "specificity_success": None,
    }
    return out | record_locality(_locality_rows(case), edited, base)


def _summarise(
    cases: Sequence[Record], metrics: list[dict[str, Any]], per_record: bool
) -> dict[str, Any]:
    user = USER_KEYS if any("chat_efficacy" in m for m in metrics) else ()
    out: dict[str, Any] = aggregate(metrics, (*METRIC_KEYS, *ZSRE_KEYS, *user))
    out["counts"] = {
        "records": len(cases),
        "rewrite_prompts": len(cases),
        "paraphrase_prompts": sum(len(c.request.paraphrase_prompts) for c in cases),
        "neighborhood_prompts": sum(len(c.request.neighborhood_prompts) for c in cases),
        "neighborhood_answers": sum(len(c.neighborhood_answers) for c in cases),
        "names_checked": sum(1 for m in metrics if m.get("names_broken") is not None),
    }
    if per_record:
        out["records"] = metrics
    return out
