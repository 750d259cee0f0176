"""The efficacy–locality frontier: each method across edit strength and z settings.

A study (not a benchmark, not run by CI). Last run at commit ae8c756 (2026-12-04);
its figures: docs/results/frontier.md.

Every point is one edit of the same records, evaluated with the CounterFact metrics: efficacy
and generalization (Success and Accuracy), specificity, the neighbourhood KL and top-1
agreement. A *setting* is a set of hyper-parameter overrides (layers, z steps and learning
rate, stopping rule, statistics size, ...); within a setting each method is swept over its
strength: λ (``covariance_weight``) for the least-squares solver, μ (``nullspace_l2``) for
AlphaEdit's null-space solver. Larger is more conservative for both.

Cheap by construction: z depends on neither λ nor μ nor the solver, so with the z cache each
extra point of a setting costs one solve and one evaluation; statistics are cached per model
and size. A point is *on the frontier* when no other point has at least its efficacy and
generalization at no more KL.

Records: ``--split dev`` is the first N MCF dev records (the evaluation set the README
reports); ``--split select`` the last N, which no reported evaluation uses: choose presets
there, then confirm on ``dev``. ``--sequential TxB`` edits T batches of B one after another
(each batch on the model edited so far, earlier keys in the regulariser) and evaluates all
T·B facts at the end.

    python -m studies.frontier [--split dev] [--n 100] [--methods fe,memit]
        [--lambdas 5000,15000,50000] [--mus 10,100] [--setting 'label:z_lr=0.1,z_steps=35' ...]
        [--sequential 10x10] [--corpus PATH] [--name frontier] [--out-dir DIR]
    python -m studies.frontier --replot a.json b.json --name merged   # no editing: one PNG/table
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS, add_methods_arg, table, write_json
from bench.sequential import edit_after
from editing import Editor, EditorCaches, EditState, WeightDelta
from editing.evaluate.data import Record, load_records
from editing.evaluate.suite import evaluate
from editing.hparams import EditHparams
from editing.methods import is_null_space
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.solve.stats import Corpus
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model

COLUMNS = ("efficacy_success", "efficacy_accuracy", "generalization_success",
           "generalization_accuracy", "specificity_success", "kl", "top1")
TARGET = {"efficacy_success": 97.0, "efficacy_accuracy": 85.0, "generalization_success": 90.0,
          "kl": 0.036, "top1": 94.0}
"""Issue 11's target for 100 facts in one batch (KL at most, the others at least)."""


@dataclass(frozen=True)
class Setting:
    """A labelled set of hyper-parameter overrides, e.g. ``ref:layers=4-8,z_lr=0.1``."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def apply(self, base: EditHparams) -> EditHparams:
        return base.with_overrides(self.overrides)


def _value(key: str, text: str) -> Any:
    """``layers=4-8`` → (4, ..., 8); numbers as int or float; ``true``/``false``; else text."""
    if key == "layers":
        first, _, last = text.partition("-")
        return list(range(int(first), int(last or first) + 1))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_setting(text: str) -> Setting:
    """``label:key=value,key=value`` (``label`` alone: the preset unchanged)."""
    label, _, body = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"setting {text!r}: {item!r} is not key=value")
        overrides[key.strip()] = _value(key.strip(), value.strip())
    try:
        EditHparams(layers=(0,)).with_overrides(overrides)  # unknown keys and bad choices now
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"setting {text!r}: {exc}") from exc
    return Setting(label.strip() or "preset", overrides)


def parse_sequential(text: str) -> tuple[int, int]:
    """``10x10`` → (batches, batch size)."""
    batches, _, size = text.lower().partition("x")
    try:
        return int(batches), int(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sequential wants BATCHESxSIZE, got {text!r}") from exc


def strengths(method: str, lambdas: list[float], mus: list[float]) -> list[tuple[str, float]]:
    """The knob that sets a method's strength and the values to sweep."""
    if is_null_space(method):
        return [("nullspace.l2", mu) for mu in mus]
    return [("covariance_weight", lam) for lam in lambdas]


def on_frontier(points: list[dict[str, Any]]) -> list[bool]:
    """Whether each point is undominated: no other has ≥ efficacy and generalization at ≤ KL
    with one of them strictly better."""
    def key(p: dict[str, Any]) -> tuple[float, float, float]:
        m = p["metrics"]
        return m["efficacy_success"], m["generalization_success"], -m["kl"]

    flags = []
    for p in points:
        mine = key(p)
        flags.append(not any(all(o >= s for o, s in zip(key(q), mine, strict=True)) and key(q) != mine
                             for q in points))
    return flags


def meets_target(metrics: dict[str, float]) -> bool:
    return all(metrics[c] <= v if c == "kl" else metrics[c] >= v for c, v in TARGET.items())


def edit_once(editor: Editor, records: list[Record]) -> tuple[WeightDelta, dict[str, Any]]:
    result = editor.edit([r.request for r in records])
    return result.delta, result.diagnostics


def edit_sequentially(editor: Editor, records: list[Record], batch_size: int) -> tuple[WeightDelta, dict[str, Any]]:
    """Batch after batch on the model as edited so far; the combined delta of all of them."""
    state, deltas = EditState(), []
    diagnostics: dict[str, Any] = {}
    for start in range(0, len(records), batch_size):
        result = edit_after(editor, [r.request for r in records[start:start + batch_size]], deltas, state)
        state, diagnostics = result.state, result.diagnostics
        deltas.append(result.delta)
    return WeightDelta.combine(deltas), diagnostics


def plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    curves = dict.fromkeys((p["setting"], p["method"]) for p in points)
    for ax, metric in zip(axes, ("efficacy_success", "generalization_success"), strict=True):
        for setting, method in curves:
            mine = sorted((p["metrics"]["kl"], p["metrics"][metric], p["strength"])
                          for p in points if (p["setting"], p["method"]) == (setting, method))
            ax.plot([m[0] for m in mine], [m[1] for m in mine], marker="o", markersize=3,
                    label=f"{method} · {setting}")
            for kl, value, strength in mine:
                ax.annotate(f"{strength:g}", (kl, value), fontsize=6, textcoords="offset points",
                            xytext=(2, 2))
        ax.axvline(TARGET["kl"], color="gray", linestyle=":", linewidth=1)
        ax.axhline(TARGET[metric], color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("neighbourhood KL (nats, lower is better)")
        ax.set_ylabel(metric.replace("_", " ") + " (%)")
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(title + "  (labels: λ or μ; dotted: the target)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(points: list[dict[str, Any]]) -> None:
    for point, flag in zip(points, on_frontier(points), strict=True):
        point["on_frontier"] = flag
        point["meets_target"] = meets_target(point["metrics"])
    print(table(["setting", "method", "λ/μ", *COLUMNS, "frontier", "target"],
                [[p["setting"], p["method"], f"{p['strength']:g}",
                  *[f"{p['metrics'][c]:.3f}" if c == "kl" else p["metrics"][c] for c in COLUMNS],
                  "yes" if p["on_frontier"] else "", "yes" if p["meets_target"] else ""]
                 for p in points]))


def replot(paths: list[Path], png: Path) -> dict[str, Any]:
    """One PNG and table from several runs on the same records (e.g. two sweeps of a split)."""
    runs = [json.loads(path.read_text()) for path in paths]
    splits = {(run["split"], run["n"], str(run.get("sequential"))) for run in runs}
    if len(splits) != 1:
        raise SystemExit(f"these files measure different records: {sorted(splits)}")
    points = [p for run in runs for p in run["points"]]
    print_table(points)
    run = runs[0]
    shape = (f"{run['sequential'][0]}×{run['sequential'][1]} sequential" if run.get("sequential")
             else f"{run['n']} in one batch")
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(points, png, f"{run['model']}: {shape}, {run['split']} records")
    print(f"wrote {png}")
    return {**run, "points": points}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("dev", "select"), default="dev",
                        help="dev: the first N records (reported); select: the last N (for choosing)")
    parser.add_argument("--n", type=int, default=100, help="facts in one batch (ignored with --sequential)")
    add_methods_arg(parser, default="fe,memit")
    parser.add_argument("--lambdas", default="5000,15000,50000",
                        help="λ values for least-squares methods, comma-separated")
    parser.add_argument("--mus", default="10,100,1000",
                        help="μ values for null-space methods, comma-separated")
    parser.add_argument("--setting", action="append", type=parse_setting, default=None,
                        help="label:key=value,... overrides of the preset; repeat for several "
                             "(default: the preset alone)")
    parser.add_argument("--sequential", type=parse_sequential, default=None, metavar="TxB",
                        help="edit T batches of B one after another instead of N in one batch")
    parser.add_argument("--corpus", default=None, help="statistics corpus (default: WikiText-2 valid)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--name", default="frontier", help="results file name (JSON and PNG)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--replot", nargs="+", type=Path, default=None, metavar="JSON",
                        help="no editing: merge these results files into one PNG and table")
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.replot, args.out_dir / f"{args.name}.png")

    lm = load_model(args.model)
    preset = preset_for(lm.name, lm.model)
    settings = args.setting or [Setting("preset")]
    n = args.sequential[0] * args.sequential[1] if args.sequential else args.n
    everything = load_records(shared_data_dir() / "mcf_dev.json")
    records = everything[:n] if args.split == "dev" else everything[-n:]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    mus = [float(v) for v in args.mus.split(",")]
    z_cache = ZCache(cache_dir() / "z")
    corpus = Corpus(args.corpus) if args.corpus else None
    json_path, png_path = args.out_dir / f"{args.name}.json", args.out_dir / f"{args.name}.png"
    run = {"model": lm.name, "split": args.split, "n": len(records),
           "sequential": list(args.sequential) if args.sequential else None,
           "corpus": args.corpus or "default", "preset": preset.to_dict(), "target": TARGET}
    points: list[dict[str, Any]] = []
    # one editor for every point: statistics and templates load once per setting, and each
    # point computes with its own hparams (the editor itself never changes)
    editor = Editor(lm.model, lm.tokenizer, EditorCaches(cache_dir(), corpus, z_cache),
                    hparams=preset, model_name=lm.name)
    for setting in settings:
        for method in args.methods:
            hp = setting.apply(preset).with_method(method)
            for knob, strength in strengths(method, lambdas, mus):
                point = editor.with_hparams(hp.with_overrides({knob: strength}))
                started = time.perf_counter()
                if args.sequential:
                    delta, diag = edit_sequentially(point, records, args.sequential[1])
                else:
                    delta, diag = edit_once(point, records)
                edit_s = time.perf_counter() - started
                metrics = evaluate(lm.model, lm.tokenizer, records, delta, dataset="counterfact")
                points.append({
                    "setting": setting.label, "overrides": setting.overrides, "method": method,
                    "knob": knob, "strength": strength, "metrics": metrics,
                    "update_norm": diag["update_norm"], "z_steps_mean": sum(diag["z_steps"]) / len(diag["z_steps"]),
                    "edit_s": edit_s, "eval_s": time.perf_counter() - started - edit_s,
                })
                print(f"{setting.label} {method} {knob}={strength:g}: "
                      + ", ".join(f"{c}={metrics[c]:.3g}" for c in COLUMNS), flush=True)
                write_json(args.name, {**run, "points": points}, out=json_path)
    print_table(points)  # marks each point on_frontier / meets_target
    write_json(args.name, {**run, "points": points}, out=json_path)
    shape = f"{args.sequential[0]}×{args.sequential[1]} sequential" if args.sequential else f"{n} in one batch"
    plot(points, png_path, f"{lm.name}: {shape}, {args.split} records")
    print(f"wrote {json_path} and {png_path}")
    return {**run, "points": points}


if __name__ == "__main__":
    main()
