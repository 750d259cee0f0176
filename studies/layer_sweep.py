"""Which layers to edit: FE on held-out CounterFact records for several layer windows.

A study (not a benchmark, not run by CI). Last run at commit 6b52d34 (2026-11-22);
its figures: docs/results/frontier.md.

The preset for SmolLM2-135M comes from this sweep. It edits records that the reproduction
benchmark does not use (the last N of the file), one batch per window, and reports
efficacy / generalization / specificity Success and neighborhood KL.

    python -m studies.layer_sweep [--n 20] [--starts 1,3,5,7,9] [--width 5] [--method fe]
"""

from __future__ import annotations

import argparse
import time

from bench.common import add_method_arg, table, write_json
from editing import Editor
from editing.evaluate.data import load_records
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.solve.stats import CovarianceCache, default_corpus
from editing.weights.fingerprint import model_fingerprint
from models.load import cache_dir, load_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--starts", default="1,3,5,7,9")
    parser.add_argument("--width", type=int, default=5)
    add_method_arg(parser)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    base = preset_for(lm.name, lm.model).with_method(args.method)
    records = load_records(shared_data_dir() / "mcf_dev.json")[-args.n :]
    windows = [tuple(range(s, s + args.width)) for s in map(int, args.starts.split(","))]
    # One streaming pass for the statistics of every layer any window uses.
    every_layer = sorted({layer for w in windows for layer in w})
    CovarianceCache(cache_dir(), default_corpus(), base.stats_samples, base.stats_seq_len).get(
        lm.model, lm.tokenizer, every_layer, model_fingerprint(lm.model))
    rows, results = [], []
    for layers in windows:
        hp = base.replace(layers=layers)
        editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir())
        started = time.perf_counter()
        result = editor.edit([r.request for r in records])
        metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset="counterfact")
        entry = {"layers": list(layers), "seconds": time.perf_counter() - started,
                 "residual_ratio": result.diagnostics["residual_ratio"], **metrics}
        results.append(entry)
        rows.append([f"{layers[0]}-{layers[-1]}", metrics["efficacy_success"], metrics["generalization_success"],
                     metrics["specificity_success"], metrics["kl"], entry["seconds"]])
        print(rows[-1], flush=True)
    path = write_json("layer_sweep", {"model": lm.name, "method": args.method, "n": len(records),
                                      "hparams": base.to_dict(), "results": results})
    print(table(["layers", "efficacy", "generalization", "specificity", "KL", "seconds"], rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
