"""The first thing to run on a GPU: edit 10 CounterFact facts with FE and MEMIT, time each stage.

    python -m bench.gpu_smoke [--model ID] [--dtype bf16] [--n 10] [--device-map auto]

Per method: statistics (the first method pays for them; they are cached afterwards), z per
fact, the solve, evaluation, efficacy / generalization / specificity / KL, and the device's
peak memory next to what ``models.plan`` predicted. It refuses to run without CUDA unless
``--device cpu`` is given (that is how the test suite checks it, on a tiny model).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import table, write_json
from editing import Editor
from editing.evaluate.data import load_records
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.solve.stats import Corpus
from editing.weights.delta import model_dtype
from models.device_map import parse_device_map
from models.load import load_model
from models.placement import input_device
from models.plan import plan_for_model

COLUMNS = ["efficacy_success", "generalization_success", "specificity_success", "kl"]


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def run_method(lm: Any, method: str, records: list, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    hp = preset_for(lm.name, lm.model).with_method(method)
    if args.stats_samples:
        hp = hp.replace(stats_samples=args.stats_samples)
    corpus = Corpus(args.corpus) if args.corpus else None
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache, corpus=corpus)
    device = input_device(lm.model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = editor.edit([r.request for r in records])
    t = result.diagnostics["timings"]
    started = time.perf_counter()
    metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset="counterfact")
    plan = plan_for_model(lm.model, hp.edited_layers, n_prefixes=len(editor.prefixes()))
    return {
        "statistics_s": t["stats_s"],
        "z_per_fact_s": t["targets_s"] / len(records),
        "solve_s": t["solve_s"],
        "evaluate_s": time.perf_counter() - started,
        "metrics": {c: metrics[c] for c in COLUMNS},
        "z_group_size": result.diagnostics["z_group_size"],
        "update_rounding_error": result.diagnostics["update_rounding_error"],
        "peak_bytes": peak_memory(device),
        "planned_peak_bytes": plan.total(len(records)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF id or path (default: SmolLM2-135M)")
    parser.add_argument("--dtype", default="bf16", help="bf16 (default), fp16 or float32")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to test the script")
    parser.add_argument("--device-map", default=None, help="auto, balanced or a JSON map (shards the model)")
    parser.add_argument("--n", type=int, default=10, help="facts edited in one batch (default 10)")
    parser.add_argument("--methods", default="fe,memit")
    parser.add_argument("--stats-samples", type=int, default=None, help="override the preset's")
    parser.add_argument("--corpus", default=None, help="statistics corpus (default: WikiText-2)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="statistics cache (default: a fresh one, so statistics are timed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default: bench/results/gpu_smoke.json)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run this on a GPU machine (or --device cpu to test the script)",
              file=sys.stderr)
        return 2
    lm = load_model(args.model, device=args.device, dtype=args.dtype,
                    device_map=parse_device_map(args.device_map))
    records = load_records(shared_data_dir() / "mcf_dev.json", limit=args.n)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    report: dict[str, Any] = {"model": lm.name, "dtype": model_dtype(lm.model), "n": args.n,
                              "device": str(input_device(lm.model)), "methods": {}}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(input_device(lm.model))
    for method in args.methods.split(","):
        report["methods"][method] = run_method(lm, method, records, args, cache)
        write_json("gpu_smoke", report, args.out)
    path = write_json("gpu_smoke", report, args.out)
    gib = 1024**3
    rows = [[m, r["statistics_s"], r["z_per_fact_s"], r["solve_s"], r["evaluate_s"],
             *[r["metrics"][c] for c in COLUMNS],
             "–" if r["peak_bytes"] is None else round(r["peak_bytes"] / gib, 2),
             round(r["planned_peak_bytes"] / gib, 2)]
            for m, r in report["methods"].items()]
    print(f"\n{lm.name} in {report['dtype']} on {report.get('gpu', report['device'])}, {args.n} facts\n")
    print(table(["method", "stats s", "z s/fact", "solve s", "eval s", *COLUMNS, "peak GiB",
                 "planned GiB"], rows))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
