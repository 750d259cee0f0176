"""What the quality gate costs next to the edit it judges, on the default model.

The gate (``app/worker/gate.py``) must cost at most 20% of an edit's time. This edits one fact
(the service's usual batch) with the service's path (the model preset, FE) and then measures
the gate on the resulting delta, as the worker does: as usual (the parent's probe scores
remembered from the previous batch), cold (computed too, as after a rollback) and the first
gate of a fresh process (which also pays for the scoring kernels' first run at new shapes),
each with its share of the edit.
Statistics and templates come from the cache a first edit made (``make install`` + any
earlier edit), so the edit time is that of a service that has been running a while.

    python -m bench.gate_cost [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import time

from app.worker.gate import load_probes
from bench.common import write_json
from editing import Editor, EditRequest
from editing.evaluate.gate import measure_probed
from editing.forward.memory import eval_batch_for
from editing.presets import preset_for
from models.load import cache_dir, load_model

FACT = EditRequest(
    "Danielle Darrieux", "The mother tongue of {} is", "English", "French",
    ("Danielle Darrieux's mother tongue is",),
)


def _fact(index: int) -> EditRequest:
    """A CounterFact record (with its paraphrases) when the shared data is there."""
    from editing.evaluate.data import load_records
    from editing.paths import shared_data_dir

    path = shared_data_dir() / "mcf_dev.json"
    if not path.is_file():
        return FACT
    return load_records(path, index + 1)[index].request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--record", type=int, default=0,
                        help="which mcf_dev.json record to edit (the built-in fact without it)")
    args = parser.parse_args()
    fact = _fact(args.record)
    lm = load_model(args.model) if args.model else load_model()
    editor = Editor(lm.model, lm.tokenizer, hparams=preset_for(lm.name, lm.model), model_name=lm.name,
                    cache_dir=cache_dir())
    started = time.perf_counter()
    result = editor.edit([fact])
    edit_s = time.perf_counter() - started
    batch = eval_batch_for(lm.model)
    started = time.perf_counter()
    figures, parent_probes, _ = measure_probed(lm.model, lm.tokenizer, [fact], result.delta,
                                               load_probes(), batch)
    first_s = time.perf_counter() - started  # once per process: kernels for new shapes too
    started = time.perf_counter()
    measure_probed(lm.model, lm.tokenizer, [fact], result.delta, load_probes(), batch,
                   parent_probes)
    gate_s = time.perf_counter() - started
    started = time.perf_counter()  # the parent's probes unknown again, as after a rollback
    measure_probed(lm.model, lm.tokenizer, [fact], result.delta, load_probes(), batch)
    cold_s = time.perf_counter() - started
    timings = result.diagnostics["timings"]
    out = {"model": lm.name, "fact": fact.text + " -> " + fact.target_new,
           "z_steps": result.diagnostics["z_steps"], "edit_s": round(edit_s, 3), "gate_s": round(gate_s, 3),
           "gate_cold_s": round(cold_s, 3), "gate_share": round(gate_s / edit_s, 4),
           "gate_cold_share": round(cold_s / edit_s, 4), "gate_first_in_process_s": round(first_s, 3),
           "gate_first_in_process_share": round(first_s / edit_s, 4),
           "edit_timings": {k: round(v, 3) for k, v in timings.items()}, "gate": figures}
    print(f"{out['fact']} (z steps {out['z_steps']})")
    print(f"edit {edit_s:.2f}s (stats {timings.get('stats_s', 0):.2f}s of it)  gate "
          f"{gate_s:.2f}s = {100 * gate_s / edit_s:.1f}% (parent's probe scores remembered, "
          f"the usual case)  cold {cold_s:.2f}s = {100 * cold_s / edit_s:.1f}% (after a rollback)  "
          f"first in a fresh process {first_s:.2f}s = {100 * first_s / edit_s:.1f}%")
    print({k: figures[k] for k in ("efficacy", "generalization", "logprob_gain", "kl",
                                   "top1_agreement")})
    write_json("gate_cost", out)


if __name__ == "__main__":
    main()
