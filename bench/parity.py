"""Half precision against float32 on the same records: does an edit in bf16 work as well?

For each dtype the model is loaded in that dtype, each method edits the same first N
CounterFact records in one batch and is evaluated against the unedited model in that dtype.
The acceptance line (issue 9): efficacy and generalization within 2 points of float32, KL
within 20%. For half precision it also reports, per edited layer, how much of the update
survives being added to the stored weights (``editing.weights.precision.rounding_survival``), for
the N-fact batch and for a single-fact edit (the service's usual batch).

    python -m bench.parity [--n 100] [--methods fe,memit] [--dtypes float32,bf16]

z comes from the z cache (``~/.cache/modeledit/z``), so a float32 run that ``python -m
editing evaluate`` already made is reused; each dtype has its own statistics and z.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import add_methods_arg, table, write_json
from editing import Editor, WeightDelta
from editing.evaluate.data import load_records
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from editing.weights.delta import model_dtype
from editing.weights.precision import release_float32, rounding_survival
from models.load import cache_dir, load_model
from models.specs import mlp_out, weight_out_in

COLUMNS = ["efficacy_success", "efficacy_accuracy", "generalization_success",
           "generalization_accuracy", "specificity_success", "kl", "top1"]


def survival(model: torch.nn.Module, delta: WeightDelta) -> list[dict[str, float]]:
    """Per edited layer, what adding ``delta`` to the stored weights keeps of it."""
    return [{"layer": layer, **rounding_survival(weight_out_in(model, layer), delta.updates[layer].dense())}
            for layer in delta.layers]


def one_fact_edits(lm: Any, editor: Editor, records: list) -> dict[str, dict[str, float]]:
    """Each record edited alone (the service's usual batch), evaluated two ways: with the
    edited matrices held in float32 (what the project does) and with ``W + Δ`` rounded to
    the model's dtype (what storing the edit in half precision would give)."""
    scores: dict[str, list[dict[str, Any]]] = {"held_float32": [], "rounded": []}
    for record in records:
        delta = editor.edit([record.request]).delta
        scores["held_float32"].append(evaluate(lm.model, lm.tokenizer, [record], delta,
                                               dataset="counterfact"))
        base = delta.apply(lm.model)
        for layer in delta.layers:
            release_float32(mlp_out(lm.model, layer))  # the cast rounds W + Δ, as storing it would
        scores["rounded"].append(evaluate(lm.model, lm.tokenizer, [record], None,
                                          dataset="counterfact"))
        WeightDelta.revert(lm.model, base)
    keys = ("efficacy_success", "efficacy_accuracy", "generalization_success")
    return {policy: {k: sum(m[k] for m in runs) / len(runs) for k in keys}
            for policy, runs in scores.items()}


def run_dtype(dtype: str, methods: list[str], n: int, model_name: str | None,
              one_fact: int = 0) -> dict[str, Any]:
    lm = load_model(model_name, dtype=dtype)
    records = load_records(shared_data_dir() / "mcf_dev.json", limit=n)
    preset = preset_for(lm.name, lm.model)
    out: dict[str, Any] = {"model": lm.name, "dtype": model_dtype(lm.model)}
    for method in methods:
        editor = Editor(lm.model, lm.tokenizer, hparams=preset.with_method(method), model_name=lm.name,
                        cache_dir=cache_dir(), z_cache=ZCache(cache_dir() / "z"))
        started = time.perf_counter()
        result = editor.edit([r.request for r in records])
        edit_s = time.perf_counter() - started
        metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset="counterfact")
        single = editor.edit([records[0].request]).delta
        out[method] = {
            "metrics": metrics,
            "edit_seconds": edit_s,
            "eval_seconds": time.perf_counter() - started - edit_s,
            "survival_batch": survival(lm.model, result.delta),
            "survival_one_fact": survival(lm.model, single),
            "update_norm": [result.delta.updates[layer].norm() for layer in result.delta.layers],
        }
        if one_fact and out["dtype"] != "float32":
            out[method]["one_fact_edits"] = one_fact_edits(lm, editor, records[:one_fact])
        print(f"{dtype} {method}: " + ", ".join(f"{c}={metrics[c]:.3f}" for c in COLUMNS)
              + f" ({edit_s:.0f}s edit)", flush=True)
    return out


def verdict(ref: dict[str, Any], half: dict[str, Any]) -> dict[str, Any]:
    """The acceptance figures of one method: point differences and the KL ratio."""
    a, b = ref["metrics"], half["metrics"]
    diffs = {c: b[c] - a[c] for c in ("efficacy_success", "generalization_success",
                                      "efficacy_accuracy", "generalization_accuracy")}
    kl_ratio = b["kl"] / a["kl"] if a["kl"] else float("nan")
    ok = all(abs(diffs[c]) <= 2 for c in ("efficacy_success", "generalization_success"))
    return {"diff_points": diffs, "kl_ratio": kl_ratio,
            "within_target": bool(ok and abs(kl_ratio - 1) <= 0.2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    add_methods_arg(parser)
    parser.add_argument("--dtypes", default="float32,bf16")
    parser.add_argument("--model", default=None)
    parser.add_argument("--name", default="parity", help="results file bench/results/NAME.json")
    parser.add_argument("--out", type=Path, default=None, help="results file (overrides --name)")
    parser.add_argument("--one-fact", type=int, default=20,
                        help="half precision: also edit the first K records one at a time, held "
                             "in float32 vs rounded into the weights (default 20, 0: skip)")
    args = parser.parse_args(argv)
    methods = args.methods
    dtypes = args.dtypes.split(",")
    report: dict[str, Any] = {"n": args.n, "runs": {}}
    for dtype in dtypes:
        report["runs"][dtype] = run_dtype(dtype, methods, args.n, args.model, args.one_fact)
        write_json(args.name, report, args.out)
    ref = report["runs"].get("float32")
    if ref:
        report["verdict"] = {d: {m: verdict(ref[m], report["runs"][d][m]) for m in methods}
                             for d in dtypes if d != "float32"}
    path = write_json(args.name, report, args.out)
    rows = [[d, m, *[report["runs"][d][m]["metrics"][c] for c in COLUMNS],
             report["runs"][d][m]["edit_seconds"]] for d in dtypes for m in methods]
    print(f"\n### CounterFact, {args.n} records in one batch\n")
    print(table(["dtype", "method", *COLUMNS, "edit s"], rows))
    print("\n### How much of each layer's update survives rounding into the stored weights\n")
    rows = []
    for d in dtypes:
        for m in methods:
            run = report["runs"][d][m]
            for batch, one in zip(run["survival_batch"], run["survival_one_fact"], strict=True):
                rows.append([d, m, batch["layer"], batch["kept"], batch["error"], one["kept"], one["error"]])
    print(table(["dtype", "method", "layer", f"kept ({args.n} facts)", "error", "kept (1 fact)", "error"],
                rows))
    rows = [[d, m, policy, *values.values()]
            for d in dtypes for m in methods
            for policy, values in report["runs"][d][m].get("one_fact_edits", {}).items()]
    if rows:
        print(f"\n### {args.one_fact} records edited one at a time (efficacy S / A, generalization S)\n")
        print(table(["dtype", "method", "edited matrices", "efficacy S", "efficacy A", "generalization S"],
                    rows))
    if "verdict" in report:
        print("\n", report["verdict"])
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
