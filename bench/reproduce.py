"""The FE paper's comparison (Table 3 layout) on one model, in one command.

For each dataset (MCF and zsRE records from ``$MODELEDIT_SHARED_DATA``) every method edits the
same first N records in one batch on the unedited model, then is evaluated against it:

- ``one_layer``: z at the last edited layer, only that layer edited;
- ``memit``: backward spreading from the last edited layer (standard MEMIT);
- ``per_layer``: independent z at the first and the last edited layer (the BLUE baseline);
- ``fe``: forward replay from the first edited layer (the default);
- ``fe_templates`` (``--variants``): FE replaying z on every context prefix and averaging;
- ``unedited`` (unless ``--no-baseline``): the model itself, the floor every method starts from.

z for a given layer is the same for every method that needs it (same model, same settings),
so it is optimised once and shared through a z cache. Prints a markdown table, writes JSON and
a PNG of the per-layer residual ratio (the paper's Tables 2 and 5) for MEMIT vs FE.

    python -m bench.reproduce [--n 100] [--datasets mcf,zsre] [--methods ...] [--variants] [--no-baseline]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, table, write_json
from editing import EditHparams, Editor
from editing.evaluate.data import load_records
from editing.evaluate.suite import evaluate
from editing.methods import METHODS
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model

FILES = {"mcf": ("mcf_dev.json", "counterfact"), "zsre": ("zsre_dev.json", "zsre")}
MCF_COLUMNS = ["efficacy_success", "generalization_success", "specificity_success",
               "efficacy_accuracy", "generalization_accuracy", "kl", "top1"]
ZSRE_COLUMNS = ["zsre_efficacy", "zsre_generalization", "zsre_specificity"]


def method_hparams(base: EditHparams, variants: bool) -> dict[str, EditHparams]:
    """Every registered method on the preset. FE and MEMIT first: their z (first and last
    layer) is all the others need from the z cache. ``per_layer`` optimises z at every layer,
    so it runs on the first and last layer only (the costly part is z, not the solve)."""
    first, last = base.layers[0], base.layers[-1]
    order = ["fe", "memit", *(name for name in METHODS if name not in ("fe", "memit"))]
    methods = {name: base.with_method(name) for name in order}
    if "per_layer" in methods:
        methods["per_layer"] = methods["per_layer"].replace(layers=(first, last))
    if variants:
        methods["fe_templates"] = base.with_method("fe").replace(replay_on_templates=True)
    return methods


def plot_ratios(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in ("memit", "fe", "fe_templates"):
        if name in results:
            ratios = results[name]["residual_ratio"]
            ax.plot(range(len(ratios)), ratios, marker="o", label=name)
    ax.set_xlabel("edited layers so far")
    ax.set_ylabel("‖target − h‖ / initial, last edited layer")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Residual at the last edited layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary(metrics: dict[str, Any], dataset_key: str) -> str:
    columns = MCF_COLUMNS if dataset_key == "mcf" else ZSRE_COLUMNS
    return ", ".join(f"{c}={metrics[c]:.1f}" for c in columns if metrics.get(c) is not None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--datasets", default="mcf,zsre")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of the registered methods (and fe_templates)")
    parser.add_argument("--variants", action="store_true", help="also FE replaying on every prefix")
    parser.add_argument("--model", default=None)
    parser.add_argument("--no-baseline", action="store_true", help="skip the unedited model's row")
    parser.add_argument("--fresh-z", action="store_true", help="do not reuse z from earlier runs")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    base = preset_for(lm.name, lm.model)
    methods = method_hparams(base, args.variants)
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - set(methods))
        if unknown:
            parser.error(f"--methods {unknown}: use some of {sorted(methods)}")
        methods = {k: v for k, v in methods.items() if k in wanted}
    z_dir = Path(tempfile.mkdtemp(prefix="z-")) if args.fresh_z else cache_dir() / "z"
    z_cache = ZCache(z_dir)
    report: dict[str, Any] = {"model": lm.name, "n": args.n, "hparams": base.to_dict(), "datasets": {}}
    for key in args.datasets.split(","):
        filename, dataset = FILES[key]
        records = load_records(shared_data_dir() / filename, limit=args.n)
        results: dict[str, Any] = {}
        if not args.no_baseline:
            started = time.perf_counter()
            metrics = evaluate(lm.model, lm.tokenizer, records, None, dataset=dataset)
            results["unedited"] = {"metrics": metrics, "edit_seconds": 0.0, "residual_ratio": [],
                                   "eval_seconds": time.perf_counter() - started}
            print(f"{key} unedited: " + _summary(metrics, key), flush=True)
        for name, hp in methods.items():
            editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                            z_cache=z_cache)
            started = time.perf_counter()
            result = editor.edit([r.request for r in records])
            edit_s = time.perf_counter() - started
            metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset=dataset)
            results[name] = {
                "hparams": hp.to_dict(), "metrics": metrics, "edit_seconds": edit_s,
                "eval_seconds": time.perf_counter() - started - edit_s,
                "residual_ratio": result.diagnostics["residual_ratio"],
                "mean_z_loss": sum(result.diagnostics["z_loss"]) / len(records),
            }
            print(f"{key} {name}: " + _summary(metrics, key) + f" ({edit_s:.0f}s edit)", flush=True)
            report["datasets"][key] = results
            write_json("reproduce", report)  # partial results survive an interrupted run
        if key == "mcf":
            plot_ratios(results, RESULTS / "reproduce_residual_ratio.png")
    path = write_json("reproduce", report)
    for key, results in report["datasets"].items():
        columns = MCF_COLUMNS if key == "mcf" else ZSRE_COLUMNS
        print(f"\n### {key.upper()} ({args.n} records, {lm.name}, layers {list(base.layers)})\n")
        print(table(["method", *columns, "final residual ratio", "edit s"],
                    [[name, *[r["metrics"].get(c) for c in columns], (r["residual_ratio"] or ["–"])[-1], r["edit_seconds"]]
                     for name, r in results.items()]))
    print(f"\nwrote {path} and {RESULTS / 'reproduce_residual_ratio.png'}")


if __name__ == "__main__":
    main()
