"""``python -m editing evaluate``: edit N records in one batch (or load a saved delta),
evaluate against the unedited model, write a JSON report and print a short table.

The report's keys are a public contract (see :mod:`editing.evaluate.report`); scripts call
this command rather than the library when they want one table from one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from editing.evaluate.data import DataError, detect_dataset, load_records, requests_of
from editing.evaluate.report import build_report, format_table, write_report
from editing.evaluate.suite import DATASETS, evaluate
from editing.hparams import EditHparams
from editing.methods import METHODS
from editing.options import add_model_args, make_editor
from editing.requests import InvalidEditRequest
from editing.weights.delta import DeltaError, WeightDelta
from editing.weights.fingerprint import model_fingerprint
from models.load import ModelNotAvailable, load_model
from models.plan import InsufficientMemory


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``evaluate`` sub-command (with the shared model/edit options)."""
    parser = subparsers.add_parser(
        "evaluate",
        help="edit the first N records in one batch (or load --delta), evaluate, write a report",
        description=__doc__,
    )
    parser.add_argument("--data", required=True,
                        help="MCF/zsRE-style JSON file, or a dataset name to download "
                             "(counterfact, mcf, zsre)")
    parser.add_argument("--n", type=int, default=100, help="first N records (default 100)")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="metric set (default: detected from the records)")
    parser.add_argument("--delta", type=Path, default=None,
                        help="evaluate this saved delta instead of editing")
    parser.add_argument("--save-delta", type=Path, default=None,
                        help="also save the delta computed by the edit")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per evaluation forward pass (default: what the memory "
                             "plan lets fit, at most 32)")
    parser.add_argument("--cloze-only", action="store_true",
                        help="skip what a chat user sees (chat efficacy, greedy answers, the "
                             "subject's name, chat-form drift): the teacher-forced cloze metrics only")
    parser.add_argument("--per-record", action="store_true",
                        help="include each record's metrics in the report")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the JSON report here (the table is always printed)")
    add_model_args(parser)
    parser.set_defaults(func=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the command; 0 on success, 2 (with a message on stderr) for bad input."""
    try:
        report = _run(args)
    except (DataError, DeltaError, InvalidEditRequest, FileNotFoundError, ModelNotAvailable,
            InsufficientMemory) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out is not None:
        write_report(report, args.out)
        print(f"wrote {args.out}")
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    records = load_records(args.data, limit=args.n)
    dataset = args.dataset or detect_dataset(records)
    extra: dict[str, Any] = {"data": str(args.data)}
    mark = time.perf_counter()
    if args.delta is not None:
        lm = load_model(args.model, device=args.device, dtype=args.dtype,
                        device_map=args.device_map)
        timings["load_s"] = time.perf_counter() - mark
        delta = WeightDelta.load(args.delta)
        delta.check_compatible(lm.model, model_fingerprint(lm.model))
        hparams, method = _public_hparams(delta), delta_method(delta, args.method)
    else:
        lm, editor = make_editor(args)
        timings["load_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result = editor.edit(requests_of(records))
        timings["edit_s"] = time.perf_counter() - mark
        delta, hparams, method = result.delta, editor.hparams.to_dict(), editor.method.name
        if "residual_ratio" in result.diagnostics:
            extra["residual_ratio"] = result.diagnostics["residual_ratio"]
        if args.save_delta:
            delta.save(args.save_delta)
    mark = time.perf_counter()
    results = evaluate(lm.model, lm.tokenizer, records, delta, dataset, args.batch_size,
                       per_record=args.per_record, user_view=not args.cloze_only)
    timings["evaluate_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    extra["delta"] = {"sha256": delta.sha256, "layers": delta.layers}
    if args.per_record:
        extra["records"] = results.get("records", [])
    return build_report(model=lm.name, method=method, dataset=dataset, n=len(records),
                        hparams=hparams, results=results, timings=timings, extra=extra)


def delta_method(delta: WeightDelta, fallback: str | None) -> str | None:
    """The method a saved delta was made with: its info's ``method``, else the one its stored
    hyper-parameters give (a file written before methods were recorded names only its
    strategy, whose default method it was); ``fallback`` when neither says."""
    method = delta.info.get("method")
    if method in METHODS:
        return method
    try:
        return EditHparams.from_stored(delta.hparams).method_name
    except (TypeError, ValueError):
        return fallback


def _public_hparams(delta: WeightDelta) -> dict[str, Any]:
    """A saved delta's hyper-parameters under their public names (as stored if unreadable)."""
    try:
        return EditHparams.from_stored(delta.hparams).to_dict()
    except (TypeError, ValueError):
        return dict(delta.hparams)
