"""``python -m models.plan``: the memory plan of one or more models as a table or JSON.

Answers "which GPU do I need?" before any weights are downloaded; the figures come from
:mod:`models.plan.formulas`, the fit from :mod:`models.plan.budget`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from models.catalog import parse_layers
from models.load import DTYPES
from models.plan.budget import (
    DEFAULT_BUDGET_GIB,
    InsufficientMemory,
    eval_batch_size,
    gib,
    parse_bytes,
    z_group_size,
)
from models.plan.configs import ConfigNotFound, layers_for_config, load_config, shipped_configs
from models.plan.formulas import EDIT_COPY_SETS, GIB, MemoryPlan, plan_for_config


def _span(layers: Sequence[int]) -> str:
    if list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 1:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _fits(plan: MemoryPlan, budget: int) -> tuple[int, int]:
    """(z group size, evaluation batch) within ``budget``; 0 where not even one fits."""
    out: list[int] = []
    for fn in (z_group_size, eval_batch_size):
        try:
            out.append(fn(plan, budget))
        except InsufficientMemory:
            out.append(0)
    return out[0], out[1]


def describe(name: str, plan: MemoryPlan, n_facts: int, budget: int, budget_note: str) -> str:
    """The per-process table for one model."""
    try:
        fit = (f"z group up to {z_group_size(plan, budget)} facts, "
               f"evaluation batch up to {eval_batch_size(plan, budget)}")
    except InsufficientMemory as exc:
        fit = str(exc)
    n_edit = len(plan.layers)
    rows = [
        ("weights", plan.weights),
        (f"edit copies ({EDIT_COPY_SETS} x {n_edit} MLP output matrices)", plan.edit_copies),
        ("statistics (first edit only, then cached)", plan.stats),
        ("solve (one layer at a time)", plan.solve),
        (f"z for {n_facts} facts ({gib(plan.z_per_fact)} per fact)", plan.z_bytes(n_facts)),
        (f"evaluation (batch {plan.settings.eval_batch})", plan.eval_bytes()),
        ("peak = weights + copies + largest stage", plan.total(n_facts)),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"{name}: {plan.model_type}, {plan.n_params / 1e9:.2f} B parameters, {plan.dtype}, "
        f"edited layers {_span(plan.layers)}, z at layer {plan.z_layer}",
        f"{'per process':<{width}}  {'GiB':>8}",
    ]
    lines += [f"{label:<{width}}  {gib(value):>8}" for label, value in rows]
    lines += [
        f"{'host RAM: covariance cache (float64)':<{width}}  {gib(plan.host_covariances):>8}",
        f"budget {gib(budget)} GiB ({budget_note}): {fit}",
    ]
    return "\n".join(lines)


def compare(plans: Sequence[tuple[str, MemoryPlan]], n_facts: int, budget: int) -> str:
    """One markdown row per model (the README table)."""
    head = ["model", "params", "weights", "edit copies", "statistics", "solve",
            f"z ({n_facts} facts)", f"eval ({plans[0][1].settings.eval_batch})", "peak",
            f"z group @ {budget / GIB:g} GiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, plan in plans:
        cells = [name, f"{plan.n_params / 1e9:.2f} B", gib(plan.weights), gib(plan.edit_copies),
                 gib(plan.stats), gib(plan.solve), gib(plan.z_bytes(n_facts)),
                 gib(plan.eval_bytes()), gib(plan.total(n_facts)), str(_fits(plan, budget)[0])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


HELP = """\
lines (GiB per process; the stages run one after another):
  weights       parameters x dtype size (exact: the model is built on the meta device)
  edit copies   exact copies of the edited MLP output matrices, for bit-identical revert
                (the runtime's base copy plus the snapshot taken while an edit runs)
  statistics    float64 d_k x d_k running sums for every edited layer, one batch's product,
                and one statistics batch's activations (first edit only; cached on disk after)
  solve         ~5 float64 d_k x d_k matrices while one layer is solved
  z             forward + backward through the layers above the z layer for N facts in one
                group: (n_prefixes + 1) rows of --tokens tokens per fact, the prefix KV cache,
                float32 log-softmax over the vocabulary at the prediction positions. An
                estimate that errs high (see the models/plan/formulas.py docstring for the formula)
  evaluation    forward only, --eval-batch sequences, float32 logits at every position
  peak          weights + copies + the largest stage
  host RAM      the covariance cache the editor keeps in RAM (float64, every edited layer)
The largest z group and evaluation batch that fit --budget-gib (default 80: an H100) follow.
Give several models for one markdown row each (the README table)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.plan",
        description="Memory needed to edit a model, per process, from its config alone.",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=f"shipped config ({', '.join(shipped_configs())}), a config.json, a "
                             "model directory, or a local model name (smollm2-135m)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="weights (bf16)")
    parser.add_argument("--batch", type=int, default=100, help="facts in one z group (100)")
    parser.add_argument("--budget-gib", type=float, default=DEFAULT_BUDGET_GIB,
                        help="device memory to fit (default 80: an H100)")
    parser.add_argument("--memory-budget", type=parse_bytes, default=None, metavar="SIZE",
                        help="the same as a size, e.g. 40GiB (wins over --budget-gib)")
    parser.add_argument("--layers", type=parse_layers, default=None,
                        help="edited layers, e.g. 4-8 (default: the model's preset)")
    parser.add_argument("--z-layer", type=int, default=None,
                        help="z layer (default the first edited, as FE; MEMIT: the last)")
    parser.add_argument("--prefixes", type=int, default=6,
                        help="rows per fact: bare prompt + context prefixes (6)")
    parser.add_argument("--tokens", type=int, default=24,
                        help="padded tokens per row: the group's longest row (24)")
    parser.add_argument("--eval-batch", type=int, default=32,
                        help="evaluation sequences per pass (32)")
    parser.add_argument("--json", action="store_true", help="print JSON (bytes) instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dtype = DTYPES[args.dtype]
    budget = args.memory_budget or int(args.budget_gib * GIB)
    plans: list[tuple[str, MemoryPlan]] = []
    try:
        for model in args.models:
            name, config = load_config(model)
            layers = args.layers or layers_for_config(name, config)
            plans.append((name, plan_for_config(
                config, dtype, layers, z_layer=args.z_layer, n_prefixes=args.prefixes,
                tokens_per_row=args.tokens, eval_batch=args.eval_batch,
            )))
    except (ConfigNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = []
        for name, plan in plans:
            z_group, eval_fit = _fits(plan, budget)
            out.append({"model": name, **plan.to_dict(args.batch), "budget": budget,
                        "z_group_size": z_group, "eval_batch_size": eval_fit})
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    elif len(plans) == 1:
        given = args.memory_budget or args.budget_gib != DEFAULT_BUDGET_GIB
        note = "as given" if given else "an H100; --budget-gib"
        print(describe(plans[0][0], plans[0][1], args.batch, budget, note))
    else:
        print(compare(plans, args.batch, budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
