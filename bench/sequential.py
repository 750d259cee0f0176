"""Lifelong editing: T batches of B facts, one after another, as a service applies them.

Each batch is computed on the model with all earlier deltas applied and with their keys in
the regulariser (EditState). After every ``--eval-every`` batches it measures:

- efficacy (Success and Accuracy) and generalization over **every fact edited so far**: do
  earlier edits survive later ones?
- drift on a **fixed probe set** that no batch edits: the neighbourhood prompts of the last
  ``--probe-records`` MCF dev records (specificity, KL against the unedited model, top-1
  agreement). The same prompts after every batch, so the curve shows drift, not a changing
  sample.
- the Frobenius norm of each edited matrix's accumulated change, absolute and relative to
  the matrix: norm growth is what precedes collapse in the lifelong-editing literature.

Writes ``sequential_<method>.json`` and a PNG per method, and ``sequential.png`` comparing
them. z goes through the z cache: with ``targets_from="base"`` every batch's z is the one
computed on the base model, so methods that share the z settings (``fe``, ``fe_alphaedit``)
and other benches (``bench.frontier``) on the same records reuse it.

    python -m bench.sequential [--batches 20] [--batch-size 10] [--methods fe,memit,fe_alphaedit]
                               [--eval-every 1] [--probe-records 50] [--hparam key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, add_hparam_arg, add_methods_arg, parse_hparams, table, write_json
from editing import Editor, EditRequest, EditResult, EditState, WeightDelta
from editing.evaluate.chat import USER_KEYS
from editing.evaluate.data import Record, load_records
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model
from models.specs import weight_out_in

TRACKED = ("efficacy_success", "efficacy_accuracy", "generalization_success",
           "specificity_success", "kl", "top1")


def edited_only(record: Record) -> Record:
    """Efficacy and generalization of an edited fact; its neighbours are not re-read (drift is
    measured on the fixed probe set), which keeps re-evaluating every fact affordable."""
    request = dataclasses.replace(record.request, neighborhood_prompts=())
    return dataclasses.replace(record, request=request)


def probes_only(record: Record) -> Record:
    """A probe record: its neighbourhood prompts, for specificity, KL and top-1 agreement."""
    request = dataclasses.replace(record.request, paraphrase_prompts=())
    return dataclasses.replace(record, request=request)


def change_norms(model: Any, delta: WeightDelta) -> dict[str, dict[str, float]]:
    """Per edited layer: ‖ΔW‖ (Frobenius) and ‖ΔW‖ / ‖W‖ of the accumulated change."""
    out = {}
    for layer, update in delta.updates.items():
        norm = update.norm()
        weight = float(weight_out_in(model, layer).float().norm())
        out[str(layer)] = {"norm": norm, "relative": norm / weight}
    return out


def plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for method, rows in runs.items():
        facts = [r["facts"] for r in rows]
        axes[0].plot(facts, [r["efficacy_success"] for r in rows], label=method)
        axes[1].plot(facts, [r["specificity_success"] for r in rows], label=method)
        axes[2].plot(facts, [r["kl"] for r in rows], label=method)
        axes[3].plot(facts, [max(v["relative"] for v in r["change_norms"].values()) for r in rows],
                     label=method)
    titles = ("efficacy over all facts so far (%)", "specificity on the probe set (%)",
              "KL on the probe set (nats)", "largest ‖ΔW‖/‖W‖ of an edited matrix")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("facts edited")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def edit_after(editor: Editor, requests: list[EditRequest], earlier: list[WeightDelta],
               state: EditState) -> EditResult:
    """One batch on the model as the ``earlier`` deltas left it (their keys are in ``state``),
    as a service edits; the model's weights are back as they were when it returns."""
    base = WeightDelta.combine(earlier).apply(editor.model) if earlier else None
    try:
        return editor.edit(requests, state=state)
    finally:
        if base is not None:
            WeightDelta.revert(editor.model, base)


def print_tables(runs: dict[str, list[dict[str, Any]]]) -> None:
    for method, rows in runs.items():
        print(f"\n{method}")
        print(table(["facts", *TRACKED, "max ‖ΔW‖/‖W‖"],
                    [[r["facts"], *[f"{r[c]:.3f}" if c == "kl" else r[c] for c in TRACKED],
                      f"{max(v['relative'] for v in r['change_norms'].values()):.3f}"]
                     for r in rows]))


def run_method(lm: Any, method: str, args: argparse.Namespace, records: list[Record],
               probes: list[Record], out_dir: Path) -> list[dict[str, Any]]:
    hp = preset_for(lm.name, lm.model).with_overrides(args.hparams).with_method(method)
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                    z_cache=ZCache(cache_dir() / "z"))
    state, deltas, rows = EditState(), [], []
    started = time.perf_counter()
    name = f"sequential_{method}"
    for t in range(args.batches):
        batch = records[t * args.batch_size : (t + 1) * args.batch_size]
        result = edit_after(editor, [r.request for r in batch], deltas, state)
        state = result.state
        deltas.append(result.delta)
        if (t + 1) % args.eval_every and t + 1 != args.batches:
            continue
        total = WeightDelta.combine(deltas)
        edited = evaluate(lm.model, lm.tokenizer, [edited_only(r) for r in records[: (t + 1) * args.batch_size]],
                          total, dataset="counterfact")
        drift = evaluate(lm.model, lm.tokenizer, probes, total, dataset="counterfact")
        rows.append({
            "batch": t + 1, "facts": (t + 1) * args.batch_size,
            "efficacy_success": edited["efficacy_success"], "efficacy_accuracy": edited["efficacy_accuracy"],
            "generalization_success": edited["generalization_success"],
            "specificity_success": drift["specificity_success"], "kl": drift["kl"], "top1": drift["top1"],
            **{key: edited[key] for key in USER_KEYS if key in edited},  # what a chat user sees
            "change_norms": change_norms(lm.model, total), "elapsed_s": time.perf_counter() - started,
        })
        print(method, {k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in rows[-1].items() if k != "change_norms"}, flush=True)
        write_json(name, {"model": lm.name, "method": method, "hparams": hp.to_dict(),
                          "probe_records": len(probes), "rows": rows}, out=out_dir / f"{name}.json")
    plot({method: rows}, out_dir / f"{name}.png")
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10)
    add_methods_arg(parser, default="fe")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate after every k batches (and the last)")
    parser.add_argument("--probe-records", type=int, default=50,
                        help="the last K MCF dev records whose neighbourhood prompts measure drift")
    add_hparam_arg(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--replot", nargs="+", type=Path, default=None, metavar="JSON",
                        help="no editing: one comparison PNG (sequential.png) from these results files")
    args = parser.parse_args(argv)
    if args.replot:
        loaded = [(path, json.loads(path.read_text())) for path in args.replot]
        methods = [run["method"] for _, run in loaded]
        runs = {}
        for i, (path, run) in enumerate(loaded, 1):
            label = run["method"]
            if methods.count(label) > 1:  # variants of one method: each curve named by its file
                label = f"{label} ({path.stem})"
            runs[label if label not in runs else f"{label} #{i}"] = run["rows"]
        plot(runs, args.out_dir / "sequential.png")
        print_tables(runs)
        return runs
    args.hparams = parse_hparams(parser, args.hparam)

    lm = load_model(args.model)
    everything = load_records(shared_data_dir() / "mcf_dev.json")
    n = args.batches * args.batch_size
    if n + args.probe_records > len(everything):
        parser.error(f"{n} edited facts and {args.probe_records} probe records exceed the "
                     f"{len(everything)} MCF dev records")
    records = everything[:n]
    probes = [probes_only(r) for r in everything[len(everything) - args.probe_records:]]
    runs = {method: run_method(lm, method, args, records, probes, args.out_dir) for method in args.methods}
    plot(runs, args.out_dir / "sequential.png")
    print_tables(runs)
    print(f"wrote {args.out_dir}/sequential*.json and the PNGs beside them")
    return runs


if __name__ == "__main__":
    main()
