"""AlphaEdit's null-space solver against the least-squares one, on the same targets.

A study (not a benchmark, not run by CI). Last run at commit b8ac592 (2026-11-22);
its figures: docs/results/alphaedit.md.

Pairs each least-squares method with its null-space twin (``fe`` / ``fe_alphaedit``,
``memit`` / ``alphaedit``) on the first N CounterFact dev records in one batch, and sweeps the
null-space threshold (eigenvalues of E[k kᵀ] below it span the directions the update may
use). z does not depend on the solver, so with the z cache (``precompute-z``, or a first run)
each point costs a solve and an evaluation.

    python -m studies.alphaedit [--n 100] [--methods fe,fe_alphaedit] [--thresholds 0.002,0.02,0.2]
                              [--nullspace-l2 10]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import add_methods_arg, table, write_json
from editing import Editor
from editing.evaluate.data import load_records
from editing.evaluate.suite import evaluate
from editing.methods import is_null_space
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model

COLUMNS = ["efficacy_success", "efficacy_accuracy", "generalization_success",
           "generalization_accuracy", "specificity_success", "kl", "top1"]


def _cell(column: str, value: float) -> float | str:
    """KL is small: three decimals, where the table's default would round it to 0.01."""
    return f"{value:.3f}" if column == "kl" else value


def null_space_sizes(editor: Editor, threshold: float) -> dict[int, int]:
    """How many key directions each edited layer may change at ``threshold`` (rank of P)."""
    return {layer: int((torch.linalg.eigvalsh(cov.double()) < threshold).sum())
            for layer, cov in editor.covariances().items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    add_methods_arg(parser, default="fe,fe_alphaedit")
    parser.add_argument("--thresholds", default="0.002,0.02,0.2",
                        help="null-space thresholds, comma-separated (null-space methods only)")
    parser.add_argument("--nullspace-l2", type=float, default=None,
                        help="μ of the null-space solve (default: the hyper-parameters')")
    parser.add_argument("--model", default=None)
    parser.add_argument("--name", default="alphaedit", help="results file name")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    base = preset_for(lm.name, lm.model)
    if args.nullspace_l2 is not None:
        base = base.with_overrides({"nullspace.l2": args.nullspace_l2})
    records = load_records(shared_data_dir() / "mcf_dev.json", limit=args.n)
    z_cache = ZCache(cache_dir() / "z")
    results: list[dict[str, Any]] = []
    for method in args.methods:
        null_space = is_null_space(method)
        thresholds = [float(t) for t in args.thresholds.split(",")] if null_space else [None]
        for threshold in thresholds:
            hp = base.with_method(method)
            if threshold is not None:
                hp = hp.with_overrides({"nullspace.threshold": threshold})
            editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                            z_cache=z_cache)
            started = time.perf_counter()
            result = editor.edit([r.request for r in records])
            edit_seconds = time.perf_counter() - started
            metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset="counterfact")
            results.append({
                "method": method, "threshold": threshold, "metrics": metrics,
                "null_space_dims": null_space_sizes(editor, threshold) if null_space else None,
                "update_norms": {str(k): float(u.norm()) for k, u in result.delta.updates.items()},
                "residual_ratio": result.diagnostics["residual_ratio"],
                "edit_seconds": edit_seconds,
            })
            label = "" if threshold is None else f" threshold={threshold:g}"
            print(f"{method}{label}: " + ", ".join(f"{c}={metrics[c]:.3g}" for c in COLUMNS),
                  flush=True)
            write_json(args.name, {"model": lm.name, "n": len(records), "hparams": base.to_dict(),
                                   "results": results})
    path = write_json(args.name, {"model": lm.name, "n": len(records), "hparams": base.to_dict(),
                                  "results": results})
    print(table(["method", "threshold", *COLUMNS, "final residual ratio"],
                [[r["method"], "-" if r["threshold"] is None else f"{r['threshold']:g}",
                  *[_cell(c, r["metrics"][c]) for c in COLUMNS], r["residual_ratio"][-1]]
                 for r in results]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
