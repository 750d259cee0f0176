"""Efficacy against locality: FE and MEMIT across the covariance weight λ.

A study (not a benchmark, not run by CI). Last run at commit b8ac592 (2026-11-22);
its figures: docs/results/reproduction.md.

A stronger edit moves more of the model, so one (efficacy, KL) point per method says little
when the methods edit with different strength: MEMIT at the paper's λ writes only part of its
residual and disturbs less because it does less. Sweeping λ (``covariance_weight``: larger is
more conservative) traces each method's trade-off curve on the same records; the method whose
curve lies above the other's (more efficacy at the same KL) is the better editor.

z does not depend on λ, so with the z cache of ``bench.reproduce`` (same model, same first N
MCF records) each point costs a solve and an evaluation.

    python -m studies.tradeoff [--n 100] [--methods fe,memit] [--lambdas 5000,15000,50000,150000] [--layers 2-6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, add_methods_arg, table, write_json
from editing import Editor
from editing.evaluate.data import load_records
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model

COLUMNS = ["efficacy_success", "generalization_success", "specificity_success", "efficacy_accuracy", "kl"]


def interpolate_at(kl: float, curve: list[tuple[float, float]]) -> float | None:
    """The curve's value at ``kl`` by linear interpolation on (kl, value) points; None outside it."""
    points = sorted(curve)
    exact = [v for k, v in points if k == kl]
    if exact:
        return exact[0]
    for (k0, v0), (k1, v1) in zip(points, points[1:], strict=False):
        if k0 <= kl <= k1:
            return v0 + (v1 - v0) * (kl - k0) / (k1 - k0)
    return None


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("efficacy_success", "generalization_success"), strict=True):
        for method in dict.fromkeys(r["method"] for r in results):
            points = sorted((r["metrics"]["kl"], r["metrics"][metric], r["lambda"])
                            for r in results if r["method"] == method)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
            for kl, value, lam in points:
                ax.annotate(f"{lam:g}", (kl, value), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_xlabel("neighborhood KL (nats, lower is better)")
        ax.set_ylabel(metric.replace("_", " ") + " (%)")
        ax.legend()
    fig.suptitle("Trade-off across λ (labels)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    add_methods_arg(parser)
    parser.add_argument("--lambdas", default="5000,15000,50000,150000")
    parser.add_argument("--layers", default=None, help="edited layers FIRST-LAST (default: the preset's)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--name", default="tradeoff", help="results file name (JSON and PNG)")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    base = preset_for(lm.name, lm.model)
    if args.layers:
        first, last = map(int, args.layers.split("-"))
        base = base.replace(layers=tuple(range(first, last + 1)))
    records = load_records(shared_data_dir() / "mcf_dev.json", limit=args.n)
    z_cache = ZCache(cache_dir() / "z")
    results: list[dict[str, Any]] = []
    for method in args.methods:
        for lam in map(float, args.lambdas.split(",")):
            hp = base.with_method(method).replace(covariance_weight=lam)
            editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(), z_cache=z_cache)
            started = time.perf_counter()
            result = editor.edit([r.request for r in records])
            metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset="counterfact")
            results.append({"method": method, "lambda": lam, "metrics": metrics,
                            "residual_ratio": result.diagnostics["residual_ratio"],
                            "seconds": time.perf_counter() - started})
            print(f"{method} λ={lam:g}: " + ", ".join(f"{c}={metrics[c]:.3g}" for c in COLUMNS), flush=True)
            write_json(args.name, {"model": lm.name, "n": len(records), "hparams": base.to_dict(),
                                    "results": results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    # Each point against the other methods' curves at the same KL: the fair comparison.
    curves = {m: {c: [(r["metrics"]["kl"], r["metrics"][c]) for r in results if r["method"] == m]
                  for c in ("efficacy_success", "generalization_success")} for m in methods}
    for r in results:
        r["others_at_same_kl"] = {
            other: {c: interpolate_at(r["metrics"]["kl"], curves[other][c]) for c in curves[other]}
            for other in methods if other != r["method"]}
    path = write_json(args.name, {"model": lm.name, "n": len(records), "hparams": base.to_dict(), "results": results})
    plot(results, RESULTS / f"{args.name}.png")
    print(table(["method", "λ", *COLUMNS, "final residual ratio"],
                [[r["method"], r["lambda"], *[r["metrics"][c] for c in COLUMNS], r["residual_ratio"][-1]]
                 for r in results]))
    print(f"wrote {path} and {RESULTS / f'{args.name}.png'}")


if __name__ == "__main__":
    main()
