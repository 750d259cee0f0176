"""Sequential editing: T batches of B facts, one after another, as a service applies them.

After each batch: efficacy Success over every fact edited so far (do earlier edits survive
later ones?) and the neighborhood KL against the unedited model. Each batch is computed on
the model with all earlier deltas applied and with their keys in the regulariser (EditState).
Writes JSON and a PNG.

    python -m bench.sequential [--batches 20] [--batch-size 10] [--method fe]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from bench.common import RESULTS, add_method_arg, table, write_json
from editing import Editor, EditState, WeightDelta
from editing.evaluate.data import Record, load_records
from editing.evaluate.suite import evaluate
from editing.paths import shared_data_dir
from editing.presets import preset_for
from models.load import cache_dir, load_model


def for_tracking(record: Record, neighbors: int) -> Record:
    """Efficacy and locality only, on the first ``neighbors`` neighborhood prompts.

    Re-evaluating every fact after every batch is quadratic in the number of batches; dropping
    paraphrases and most neighbors keeps a 20-batch run within minutes on a CPU.
    """
    request = dataclasses.replace(
        record.request, paraphrase_prompts=(),
        neighborhood_prompts=record.request.neighborhood_prompts[:neighbors],
    )
    return dataclasses.replace(record, request=request)


def plot(rows: list[dict[str, Any]], method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    facts = [r["facts"] for r in rows]
    ax.plot(facts, [r["efficacy_success"] for r in rows], marker="o", label="efficacy (all facts so far)")
    ax.plot(facts, [r["specificity_success"] for r in rows], marker="s", label="specificity")
    ax.set_xlabel("facts edited")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    twin = ax.twinx()
    twin.plot(facts, [r["kl"] for r in rows], color="gray", linestyle="--", label="neighborhood KL")
    twin.set_ylabel("KL (nats)")
    ax.legend(loc="lower left")
    ax.set_title(f"Sequential editing ({method})")
    fig.tight_layout()
    fig.savefig(RESULTS / f"sequential_{method}.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10)
    add_method_arg(parser)
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate after every k batches (and the last)")
    parser.add_argument("--neighbors", type=int, default=2, help="neighborhood prompts per fact for KL")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).with_method(args.method)
    editor = Editor(lm.model, lm.tokenizer, hp, model_name=lm.name, cache_dir=cache_dir())
    records = load_records(shared_data_dir() / "mcf_dev.json", limit=args.batches * args.batch_size)
    state, deltas, rows = EditState(), [], []
    started = time.perf_counter()
    for t in range(args.batches):
        batch = records[t * args.batch_size : (t + 1) * args.batch_size]
        so_far = WeightDelta.combine(deltas) if deltas else None
        base = so_far.apply(lm.model) if so_far else None  # edit on the model as edited so far
        try:
            result = editor.edit([r.request for r in batch], state=state)
        finally:
            if base is not None:
                WeightDelta.revert(lm.model, base)
        state = result.state
        deltas.append(result.delta)
        if (t + 1) % args.eval_every and t + 1 != args.batches:
            print(f"batch {t + 1}: edited in {time.perf_counter() - started:.0f}s", flush=True)
            continue
        edited = [for_tracking(r, args.neighbors) for r in records[: (t + 1) * args.batch_size]]
        metrics = evaluate(lm.model, lm.tokenizer, edited, WeightDelta.combine(deltas), dataset="counterfact")
        rows.append({"batch": t + 1, "facts": len(edited), "efficacy_success": metrics["efficacy_success"],
                     "efficacy_accuracy": metrics["efficacy_accuracy"],
                     "specificity_success": metrics["specificity_success"], "kl": metrics["kl"],
                     "elapsed_s": time.perf_counter() - started})
        print(rows[-1], flush=True)
        write_json(f"sequential_{args.method}", {"model": lm.name, "method": args.method,
                                                  "hparams": hp.to_dict(), "rows": rows})
    # Once at the end, the full CounterFact metrics (paraphrases, every neighbor) of all facts.
    final = evaluate(lm.model, lm.tokenizer, records, WeightDelta.combine(deltas), dataset="counterfact")
    write_json(f"sequential_{args.method}", {"model": lm.name, "method": args.method,
                                              "hparams": hp.to_dict(), "rows": rows, "final": final})
    plot(rows, args.method)
    print(table(["batch", "facts", "efficacy", "efficacy acc", "specificity", "KL", "elapsed s"],
                [[r["batch"], r["facts"], r["efficacy_success"], r["efficacy_accuracy"],
                  r["specificity_success"], r["kl"], r["elapsed_s"]] for r in rows]))
    print(f"\nall {len(records)} facts at the end: " + ", ".join(
        f"{k}={final[k]:.3g}" for k in ("efficacy_success", "efficacy_accuracy", "generalization_success",
                                        "specificity_success", "kl")))
    print(f"wrote {RESULTS / f'sequential_{args.method}.json'} and the PNG beside it")


if __name__ == "__main__":
    main()
