"""One entry point for both datasets: pick the metric set the records call for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.evaluate.counterfact import evaluate_counterfact
from editing.evaluate.data import Record, detect_dataset
from editing.evaluate.zsre import evaluate_zsre
from editing.forward.memory import eval_batch_for
from editing.requests import EditRequest
from editing.weights.delta import WeightDelta

DATASETS: tuple[str, ...] = ("counterfact", "zsre")


def evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record | EditRequest],
    delta: WeightDelta | None = None,
    dataset: str | None = None,
    batch_size: int | None = None,
    per_record: bool = False,
    user_view: bool = True,
) -> dict[str, Any]:
    """CounterFact or zsRE metrics (``dataset`` None: detected from the records), and with
    ``user_view`` what a chat user sees (:mod:`editing.evaluate.chat`: chat efficacy,
    greedy answers, the subject's name, chat-form drift; it adds greedy generation).

    ``batch_size`` None: as many sequences per pass as the memory plan lets fit (at most 32).
    """
    dataset = dataset or detect_dataset(records)
    batch_size = batch_size or eval_batch_for(model)
    if dataset == "counterfact":
        return evaluate_counterfact(model, tokenizer, records, delta, batch_size, per_record,
                                    user_view)
    if dataset == "zsre":
        return evaluate_zsre(model, tokenizer, records, delta, batch_size, per_record, user_view)
    raise ValueError(f"dataset {dataset!r} unknown; use one of {DATASETS}")
