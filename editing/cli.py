"""Command line: ``python -m editing {edit,precompute-z,evaluate}`` (also ``modeledit``).

Defaults give a useful run on the default model with nothing but a data file::

    python -m editing edit --data ../shared/data/mcf_dev.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from editing.evaluate.cli import add_evaluate_parser
from editing.evaluate.data import DataError, load_records
from editing.forward.logprob import target_logprob
from editing.options import add_model_args, make_editor
from editing.requests import EditRequest, InvalidEditRequest
from editing.state import EditState
from editing.weights.delta import WeightDelta
from models.load import ModelNotAvailable
from models.plan import InsufficientMemory


def load_requests(path: Path, limit: int | None) -> list[EditRequest]:
    """Edit requests from a CounterFact/zsRE-style JSON list (first ``limit`` records)."""
    return [record.request for record in load_records(path, limit=limit)]


class ProgressBars:
    """One tqdm bar per stage (stats, z, solve), fed by the editor's progress callback."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=1000, desc=stage, leave=False, file=sys.stderr)
        bar.n = int(min(fraction, 1.0) * 1000)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def cmd_edit(args: argparse.Namespace) -> int:
    requests = load_requests(args.data, args.num_edits)
    lm, editor = make_editor(args)
    batch_size = args.batch_size or len(requests)
    print(f"model {lm.name}, method {editor.method.name} ({editor.hparams.strategy_name}), layers "
          f"{list(editor.hparams.edited_layers)}, {len(requests)} edits in batches of {batch_size}")
    before = [target_logprob(lm.model, lm.tokenizer, r.text, r.target_new) for r in requests]
    state, deltas, bars = EditState(), [], ProgressBars()
    started = time.perf_counter()
    for start in range(0, len(requests), batch_size):
        batch = requests[start : start + batch_size]
        result = editor.edit(batch, state=state, progress=bars)
        bars.close()
        result.delta.apply(lm.model)  # the next batch is computed on the edited model
        state = result.state
        deltas.append(result.delta)
        d = result.diagnostics
        print(f"batch {start // batch_size + 1}: {len(batch)} edits in {d['timings']['total_s']:.1f}s, "
              f"residual ratio {[round(x, 3) for x in d['residual_ratio']]}")
    elapsed = time.perf_counter() - started
    delta = deltas[0] if len(deltas) == 1 else WeightDelta.combine(deltas)
    sha = delta.save(args.out)
    after = [target_logprob(lm.model, lm.tokenizer, r.text, r.target_new) for r in requests]
    print(f"\n{'subject':<28} {'target_new':<18} {'logp before':>11} {'after':>8}")
    for r, b, a in zip(requests, before, after, strict=True):
        print(f"{r.subject[:28]:<28} {r.target_new[:18]:<18} {b:>11.2f} {a:>8.2f}")
    print(f"\nwrote {args.out} (sha256 {sha[:16]}…) in {elapsed:.1f}s of editing")
    return 0


def cmd_precompute_z(args: argparse.Namespace) -> int:
    requests = load_requests(args.data, args.num_edits)
    lm, editor = make_editor(args)
    bars = ProgressBars()
    started = time.perf_counter()
    z_layers = editor.method.strategy.z_layers(editor.hparams.edited_layers)
    for layer in z_layers:
        for start in range(0, len(requests), args.batch_size):
            result = editor.z_at(requests[start : start + args.batch_size], layer, bars)
            bars.close()
            print(f"layer {layer}: requests {start}-{start + len(result.nll) - 1}, "
                  f"mean final NLL {sum(result.nll) / len(result.nll):.3f}")
    print(f"cached z for {len(requests)} requests at layers {list(z_layers)} in "
          f"{time.perf_counter() - started:.1f}s under {editor.z_cache.directory if editor.z_cache else '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m editing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    edit = sub.add_parser("edit", help="edit facts from a data file and save the weight delta")
    edit.add_argument("--data", type=Path, required=True, help="CounterFact/zsRE-style JSON file")
    edit.add_argument("--num-edits", type=int, default=10, help="first N records (default 10)")
    edit.add_argument("--batch-size", type=int, default=None,
                      help="facts per batch; batches are applied one after another (default: all at once)")
    edit.add_argument("--out", type=Path, default=Path("delta.safetensors"))
    edit.add_argument("--z-cache", type=Path, default=None, help="z cache directory (default: <cache-dir>/z)")
    add_model_args(edit)
    edit.set_defaults(func=cmd_edit)

    pre = sub.add_parser("precompute-z", help="optimise and cache z for a data file, reused by `edit`")
    pre.add_argument("--data", type=Path, required=True)
    pre.add_argument("--num-edits", type=int, default=10)
    pre.add_argument("--batch-size", type=int, default=64, help="requests optimised together")
    pre.add_argument("--z-cache", type=Path, default=None)
    add_model_args(pre)
    pre.set_defaults(func=cmd_precompute_z)

    add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (InvalidEditRequest, DataError, FileNotFoundError, ModelNotAvailable, InsufficientMemory) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
