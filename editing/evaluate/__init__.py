"""CounterFact / zsRE evaluation of an edit against the unedited model (docs/design.md §8).

Typical use::

    from editing.evaluate import load_records, evaluate, build_report
    records = load_records("../shared/data/mcf_dev.json", limit=100)
    results = evaluate(lm.model, lm.tokenizer, records, delta)   # model holds base weights

``python -m editing evaluate`` wraps the same steps and writes the JSON report.
"""

from editing.evaluate.chat import USER_KEYS
from editing.evaluate.counterfact import METRIC_KEYS, evaluate_counterfact
from editing.evaluate.data import DataError, Record, detect_dataset, load_records, parse_records
from editing.evaluate.report import build_report, format_table, write_report
from editing.evaluate.suite import evaluate
from editing.evaluate.zsre import ZSRE_KEYS, evaluate_zsre

__all__ = [
    "METRIC_KEYS",
    "USER_KEYS",
    "ZSRE_KEYS",
    "DataError",
    "Record",
    "build_report",
    "detect_dataset",
    "evaluate",
    "evaluate_counterfact",
    "evaluate_zsre",
    "format_table",
    "load_records",
    "parse_records",
    "write_report",
]
