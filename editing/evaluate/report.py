"""The evaluation report: a JSON document whose key names are a public contract.

Scripts and other tools read ``report["metrics"]["efficacy_success"]`` and friends, so the
keys are fixed here in one place and always present (``None`` where a dataset does not
define a metric, e.g. Success on zsRE), never silently missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from editing.evaluate.chat import USER_KEYS
from editing.evaluate.counterfact import METRIC_KEYS
from editing.evaluate.metrics import NON_PERCENT_KEYS
from editing.evaluate.zsre import ZSRE_KEYS
from models.files import atomic_write

SCHEMA_VERSION = 1


def build_report(
    *,
    model: str,
    method: str | None,
    dataset: str,
    n: int,
    hparams: Mapping[str, Any] | None,
    results: Mapping[str, Any],
    timings: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report from ``evaluate_*`` results (percentages 0–100, ``kl`` in nats)."""
    keys = (*METRIC_KEYS, *ZSRE_KEYS) if dataset == "zsre" else METRIC_KEYS
    metrics = {key: _number(results.get(key)) for key in keys}
    if any(key in results for key in USER_KEYS):  # evaluated with the user view
        metrics |= {key: _number(results.get(key)) for key in USER_KEYS}
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "method": method,
        "dataset": dataset,
        "n": n,
        "hparams": dict(hparams or {}),
        "metrics": metrics,
        "counts": dict(results.get("counts", {})),
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
    }
    if extra:
        report.update(extra)
    return report


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def write_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report atomically (a reader never sees half a file)."""
    out = Path(path)
    atomic_write(out, (json.dumps(report, indent=2, sort_keys=False) + "\n").encode())
    return out


def format_table(report: Mapping[str, Any]) -> str:
    """A short human-readable table of the report's metrics."""
    head = (
        f"{report.get('dataset')} · model {report.get('model')} · method {report.get('method')}"
        f" · n={report.get('n')}"
    )
    lines = [head, f"{'metric':<26}{'value':>10}", "-" * 36]
    for key, value in report["metrics"].items():
        if value is None:
            shown = "—"
        elif key in NON_PERCENT_KEYS:
            shown = f"{value:.5f}" if "kl" in key else f"{value:.3f}"
        else:
            shown = f"{value:.1f}"
        lines.append(f"{key:<26}{shown:>10}")
    timings = report.get("timings") or {}
    if timings:
        lines.append("timings: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    return "\n".join(lines)
