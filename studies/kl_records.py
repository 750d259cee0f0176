"""Which records, and which facts, carry the neighbourhood KL of one batch.

A study (not a benchmark, not run by CI). Last run at commit 7315e9a (2026-12-03);
its figures: docs/results/drift_sources.md.

The evaluation's KL is a mean over records of each record's neighbourhood KL. This bench edits
the first N MCF dev records in one batch at the preset and prints how that mean is made:

- **the distribution over records**: mean, median, the mean without the largest 1 / 3 / 10,
  and the records with the largest KL next to their prompt, new and true target;
- with ``--pairs``, **which fact moves which record's neighbours**: the KL on record i's
  neighbourhood prompts with only fact j's ΔW terms applied (``r_j a_jᵀ`` at every edited
  layer, :func:`studies.kl_sources.fact_terms`), for every (i, j): how concentrated the other
  facts' part is, and how much of it comes from facts that share record i's true object
  (CounterFact's neighbours of i are subjects with that object, so such a fact's own
  neighbours overlap i's). One forward pass of every neighbourhood prompt per fact: about
  25 s per fact on 2 CPU cores, 40 minutes for 100.

    python -m studies.kl_records [--n 100] [--pairs] [--top 10] [--hparam key=JSON ...] [--model NAME]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from bench.common import RESULTS, add_hparam_arg, add_method_arg, parse_hparams, table, write_json
from editing import Editor, WeightDelta
from editing.evaluate.data import Record, load_records
from editing.evaluate.metrics import kl_divergence
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model
from studies.kl_sources import fact_terms, next_token_logprobs


def tail_summary(kls: Sequence[float]) -> dict[str, float]:
    """Mean and median of per-record KLs, and the mean without the largest 1 / 3 / 10."""
    values = torch.tensor(list(kls), dtype=torch.float64)
    ranked = values.sort(descending=True).values
    out = {"mean": float(values.mean()), "median": float(values.median())}
    for k in (1, 3, 10):
        if k < len(values):
            out[f"mean_without_top{k}"] = float(ranked[k:].mean())
            out[f"top{k}_share"] = float(ranked[:k].sum() / values.sum()) if values.sum() > 0 else 0.0
    return out


def describe(record: Record) -> str:
    r = record.request
    return f"{r.prompt.format(r.subject)} → {r.target_new} (true {r.target_true})"


@torch.no_grad()
def kl_by_fact_and_record(model: nn.Module, tokenizer: PreTrainedTokenizerBase, records: Sequence[Record],
                          delta: WeightDelta) -> torch.Tensor:
    """(N, N): entry (i, j) is the mean KL(unedited ‖ edited) over record i's neighbourhood
    prompts with only fact j's terms of ``delta`` applied (``records`` in the batch's order)."""
    prompts, owner = [], []
    for i, record in enumerate(records):
        prompts += record.request.neighborhood_prompts
        owner += [i] * len(record.request.neighborhood_prompts)
    owners = torch.tensor(owner)
    unedited = next_token_logprobs(model, tokenizer, prompts)
    out = torch.zeros(len(records), len(records), dtype=torch.float64)
    for j in range(len(records)):
        per_prompt = kl_divergence(unedited, next_token_logprobs(model, tokenizer, prompts, fact_terms(delta, j)))
        out[:, j] = torch.zeros(len(records), dtype=torch.float64).index_add_(
            0, owners, per_prompt.double()) / torch.bincount(owners, minlength=len(records)).clamp(min=1)
    return out


def pair_summary(pairs: torch.Tensor, records: Sequence[Record], top: int) -> dict[str, Any]:
    """What the fact × record KL matrix says: own against others, how concentrated the others
    are, the share of facts with the record's true object, and the facts that leak most."""
    n = pairs.shape[0]
    own = pairs.diag()
    others = pairs.clone()
    others.fill_diagonal_(0)
    ranked = others.sort(dim=1, descending=True).values
    totals = ranked.sum(1).clamp(min=1e-30)
    same_true = torch.tensor([[i != j and records[i].request.target_true == records[j].request.target_true
                               for j in range(n)] for i in range(n)])
    leaks = others.sum(0)
    return {
        "own_mean": float(own.mean()),
        "others_sum_mean": float(others.sum(1).mean()),
        "top_other_shares": {k: float((ranked[:, :k].sum(1) / totals).mean()) for k in (1, 3, 10) if k < n},
        "same_true_object_pairs": int(same_true.sum()),
        "same_true_object_share": float((others * same_true).sum() / others.sum().clamp(min=1e-30)),
        "leaking_most": [{"fact": j, "onto_others": float(leaks[j]), "own": float(own[j]),
                          "request": describe(records[j])}
                         for j in leaks.argsort(descending=True)[:top].tolist()],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="the first N MCF dev records, edited in one batch")
    add_method_arg(parser)
    add_hparam_arg(parser)
    parser.add_argument("--pairs", action="store_true", help="also the KL of each record under each fact alone")
    parser.add_argument("--top", type=int, default=10, help="records (and facts) listed")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    overrides = parse_hparams(parser, args.hparam)

    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).with_overrides(overrides).with_method(args.method)
    records = load_records(shared_data_dir() / "mcf_dev.json")[: args.n]
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                    z_cache=ZCache(cache_dir() / "z"))
    delta = editor.edit([r.request for r in records]).delta
    metrics = evaluate(lm.model, lm.tokenizer, records, delta, dataset="counterfact", per_record=True)
    per_record = [row["kl"] for row in metrics["records"]]
    order = sorted(range(len(records)), key=lambda i: -per_record[i])[: args.top]
    result: dict[str, Any] = {
        "model": lm.name, "method": args.method, "n": len(records), "hparams": hp.to_dict(),
        "kl": metrics["kl"], "tail": tail_summary(per_record), "per_record_kl": per_record,
        "largest": [{"record": i, "kl": per_record[i], "request": describe(records[i])} for i in order],
    }
    print(table(["neighbourhood KL over records", "value"], [[k, f"{v:.4f}"] for k, v in result["tail"].items()]))
    print(table(["record", "its neighbourhood KL", "request"],
                [[row["record"], f"{row['kl']:.3f}", row["request"]] for row in result["largest"]]))
    if args.pairs:
        pairs = kl_by_fact_and_record(lm.model, lm.tokenizer, records, delta)
        result["pairs"] = pair_summary(pairs, records, args.top)
        result["pair_kl"] = pairs.tolist()
        summary = result["pairs"]
        print(table(["fact × record", "value"],
                    [["own fact alone, mean over records", f"{summary['own_mean']:.4f}"],
                     ["the other facts alone, summed, mean over records", f"{summary['others_sum_mean']:.4f}"],
                     *[[f"share of the largest {k} other facts", f"{v:.2f}"]
                       for k, v in summary["top_other_shares"].items()],
                     [f"share of facts with the record's true object ({summary['same_true_object_pairs']} pairs)",
                      f"{summary['same_true_object_share']:.2f}"]]))
        print(table(["fact", "KL it adds to the other records' neighbourhoods (sum)", "its own", "request"],
                    [[row["fact"], f"{row['onto_others']:.3f}", f"{row['own']:.3f}", row["request"]]
                     for row in summary["leaking_most"]]))
    path = write_json("kl_records", result, out=args.out_dir / "kl_records.json")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
