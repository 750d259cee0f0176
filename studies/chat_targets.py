"""Issue 25's targets (item 4), checked for named variants of the default preset.

A study (not a benchmark, not run by CI). Last run at commit 378253f (2026-12-05);
its figures: docs/results/chat.md.

For each variant, two protocols, scored with the full evaluation (cloze efficacy, neighbourhood
KL, chat efficacy, greedy chat and cloze answers, names broken, fluency, chat-form drift):

- **batch**: the first ``--n`` MCF dev records edited in one batch;
- **sequential**: the first ``--seq-n`` as ``--batches`` sequential batches (each on the model
  as the earlier ones left it, their keys in the regulariser, as ``bench.sequential`` does),
  scored over all of them after the last batch; drift is the KL on the fixed probe set (the
  neighbourhood prompts of the last ``--probe-records`` dev records), as there.

Requests carry only the cloze prompt, as today's users send them, except for the variants
marked ``questions`` (the record's ``question`` is given at edit time too). Targets, pass or
fail per variant and protocol (:data:`TARGETS`): the greedy chat answer names ``target_new``
and not ``target_true`` in >= 80 % of records (>= 95 % with the question given at edit time),
chat efficacy >= 95 %, names broken <= 2 %, and against the preset measured in the same run
(or ``--baseline``, an earlier output of this bench): cloze efficacy at most 1 point lower and
(probe-set) KL at most 5 % higher.

z goes through the z cache and the key statistics through the statistics cache, both under
the model cache directory the other benches use (``models.load.cache_dir``); with the
preset's ``targets_from="base"`` a sequential batch's z is the one-batch run's, so the first
``--n`` facts' z are computed once per variant. The JSON (``--out``) is rewritten after every
variant and protocol, so a run cut short keeps what it finished.

``--split select`` edits the last ``--n`` records instead (batch protocol only): a variant is
chosen there and reported on the first ones, as the presets are.

    python -m studies.chat_targets [--n 100] [--seq-n 200] [--batches 20] [--variants preset,late_layers]
                                 [--split select]
                                 [--device cuda] [--dtype float32] [--out PATH] [--hparam key=JSON ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS, add_hparam_arg, parse_hparams, table, write_json
from bench.sequential import change_norms, edit_after, edited_only, probes_only
from editing import Editor, EditRequest, EditState, WeightDelta
from editing.editor import EditorCaches
from editing.evaluate.data import Record, load_records
from editing.evaluate.suite import evaluate
from editing.hparams import EditHparams
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model


@dataclass(frozen=True)
class Variant:
    """A named change to the preset: ``overrides`` of its hyper-parameters (computed from the
    preset, so a layer shift follows the model), and whether requests carry their question."""

    overrides: Callable[[EditHparams], dict[str, Any]]
    questions: bool = False
    about: str = ""


def _later_layers(hp: EditHparams) -> dict[str, Any]:
    return {"layers": [layer + 1 for layer in hp.layers]}


VARIANTS: dict[str, Variant] = {  # in the order a run cut short should have measured them
    "preset": Variant(lambda hp: {}, about="today's preset, cloze-only requests"),
    "chat_teach": Variant(lambda hp: {"chat.question": True},
                          about="z and keys also over the chat template (cloze as the user's message)"),
    "chat_teach_question": Variant(lambda hp: {"chat.question": True}, questions=True,
                                   about="chat_teach with the record's question given at edit time"),
    "name_chat": Variant(lambda hp: {"chat.name_kl_factor": 1.0, "chat.name_context": "chat"},
                         about="a z term keeping the name's copy after a chat question naming it"),
    "name_chat_4": Variant(lambda hp: {"chat.name_kl_factor": 4.0, "chat.name_context": "chat"},
                           about="name_chat with the name term at weight 4"),
    "name_chat_16": Variant(lambda hp: {"chat.name_kl_factor": 16.0, "chat.name_context": "chat"},
                            about="name_chat with the name term at weight 16"),
    "chat_answer": Variant(lambda hp: {"chat.answer": True},
                           about="z and keys also over the chat turn answered at once (cloze as the user's "
                                 "message, target_new as the assistant's first tokens)"),
    "chat_answer_question": Variant(lambda hp: {"chat.answer": True}, questions=True,
                                    about="chat_answer with the record's question given at edit time: "
                                          "chat efficacy's own context taught (a bound)"),
    "name_question_4": Variant(lambda hp: {"chat.name_kl_factor": 4.0, "chat.name_context": "question"}, questions=True,
                               about="the name term in the record's own question, the context names are "
                                     "checked in (a bound)"),
    "name_question_64": Variant(lambda hp: {"chat.name_kl_factor": 64.0, "chat.name_context": "question"}, questions=True,
                                about="name_question_4 with the name term at weight 64 (how far the bound goes)"),
    "late_layers": Variant(_later_layers, about="the edit window one layer deeper (4-8 -> 5-9): "
                           "no update at the layer whose change alone broke names"),
    "chat_teach_late": Variant(lambda hp: {"chat.question": True, **_later_layers(hp)},
                               about="chat_teach and late_layers together"),
}

TARGETS: dict[str, tuple[str, float]] = {
    "generated_chat_efficacy": (">=", 80.0),
    "chat_efficacy": (">=", 95.0),
    "names_broken": ("<=", 2.0),
}
"""Absolute targets; with the question given at edit time the greedy chat answer's is
:data:`QUESTION_GREEDY`. Relative ones: :data:`EFFICACY_DROP`, :data:`KL_RISE`."""
QUESTION_GREEDY = 95.0
EFFICACY_DROP = 1.0
KL_RISE = 1.05


def variant_list(text: str) -> list[str]:
    """``--variants a,b``: names in :data:`VARIANTS` (an argparse error naming them otherwise)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return names


def edit_requests(records: Sequence[Record], questions: bool) -> list[EditRequest]:
    """What a request carries at edit time: the cloze fact, with its question only if asked."""
    return [r.request if questions else dataclasses.replace(r.request, question=None) for r in records]


def bounds(questions: bool) -> dict[str, str]:
    """Each target as text, by its name in :func:`checks`."""
    greedy = QUESTION_GREEDY if questions else TARGETS["generated_chat_efficacy"][1]
    out = {key: f"{op} {greedy if key == 'generated_chat_efficacy' else bound:g}"
           for key, (op, bound) in TARGETS.items()}
    return out | {"efficacy_success_vs_preset": f">= preset - {EFFICACY_DROP:g}",
                  "kl_vs_preset": f"<= preset x {KL_RISE:g}"}


def checks(metrics: dict[str, Any], baseline: dict[str, Any] | None, questions: bool) -> dict[str, bool | None]:
    """Pass/fail of each target (None: not measurable, e.g. no baseline or no eligible name)."""
    out: dict[str, bool | None] = {}
    for key, (op, bound) in TARGETS.items():
        if key == "generated_chat_efficacy" and questions:
            bound = QUESTION_GREEDY
        value = metrics.get(key)
        out[key] = None if value is None else bool(value >= bound if op == ">=" else value <= bound)
    if baseline is None:
        out["efficacy_success_vs_preset"] = out["kl_vs_preset"] = None
    else:
        out["efficacy_success_vs_preset"] = metrics["efficacy_success"] >= baseline["efficacy_success"] - EFFICACY_DROP
        out["kl_vs_preset"] = metrics["kl"] <= baseline["kl"] * KL_RISE
    return out


KEYS = ("efficacy_success", "generalization_success", "kl", "chat_efficacy", "generated_chat_efficacy",
        "generated_chat_true", "generated_cloze_efficacy", "names_broken", "fluency", "chat_kl")


def run_batch(editor: Editor, lm: Any, records: list[Record], variant: Variant) -> dict[str, Any]:
    """One batch of ``records``: the edit, then the full evaluation with its delta."""
    result = editor.edit(edit_requests(records, variant.questions))
    metrics = evaluate(lm.model, lm.tokenizer, records, result.delta, dataset="counterfact", per_record=True)
    answers = [{"id": r.id, "chat_answer": m["chat_answer"], "cloze_answer": m["cloze_answer"]}
               for r, m in zip(records, metrics.pop("records"), strict=True)]
    return {"metrics": metrics, "answers": answers,
            "update_norm": result.diagnostics["update_norm"]}


def run_sequential(editor: Editor, lm: Any, records: list[Record], probes: list[Record], batches: int,
                   variant: Variant) -> dict[str, Any]:
    """``batches`` batches one after another, as a service applies them; scored over every fact
    (their neighbours left out) and on the probe set's neighbourhood prompts after the last."""
    size = -(-len(records) // batches)
    state, deltas = EditState(), []
    for t in range(batches):
        part = records[t * size : (t + 1) * size]
        if not part:
            break
        result = edit_after(editor, edit_requests(part, variant.questions), deltas, state)
        state = result.state
        deltas.append(result.delta)
    total = WeightDelta.combine(deltas)
    edited = evaluate(lm.model, lm.tokenizer, [edited_only(r) for r in records], total, dataset="counterfact")
    drift = evaluate(lm.model, lm.tokenizer, probes, total, dataset="counterfact", user_view=False)
    metrics = {**edited, "kl": drift["kl"], "specificity_success": drift["specificity_success"],
               "top1": drift["top1"]}
    return {"metrics": metrics, "batches": len(deltas), "batch_size": size,
            "change_norms": change_norms(lm.model, total)}


def print_summary(results: dict[str, dict[str, Any]]) -> None:
    for protocol in ("batch", "sequential"):
        rows = [(name, r[protocol]) for name, r in results.items() if protocol in r]
        if not rows:
            continue
        print(f"\n{protocol}")
        print(table(["variant", *KEYS, "wall s"],
                    [[name, *[_fmt(p["metrics"].get(k), k) for k in KEYS], f"{p['wall_s']:.1f}"]
                     for name, p in rows]))
        names = list(rows[0][1]["checks"])
        print(table(["variant", *names],
                    [[name, *[_verdict(p["checks"][c], p["bounds"][c]) for c in names]] for name, p in rows]))


def _verdict(passed: bool | None, bound: str) -> str:
    return f"{'n/a' if passed is None else 'pass' if passed else 'FAIL'} ({bound})"


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if key in ("kl", "chat_kl") else f"{value:.1f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="the first N MCF dev records, in one batch")
    parser.add_argument("--seq-n", type=int, default=200, help="the first N records, edited sequentially")
    parser.add_argument("--batches", type=int, default=20, help="sequential batches (of seq-n / batches facts)")
    parser.add_argument("--probe-records", type=int, default=50,
                        help="the last K MCF dev records whose neighbourhood prompts measure sequential drift")
    parser.add_argument("--variants", type=variant_list, default=list(VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--protocols", default="batch,sequential",
                        help="batch, sequential or both (default %(default)s)")
    parser.add_argument("--split", choices=("dev", "select"), default="dev",
                        help="dev: the first --n records (reported); select: the last --n, which no "
                             "reported evaluation uses, for choosing (batch protocol only)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier output of this bench whose 'preset' the relative targets use "
                             "when this run has no preset")
    add_hparam_arg(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 (default), bf16 or fp16")
    parser.add_argument("--out", type=Path, default=RESULTS / "chat_targets.json")
    args = parser.parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not protocols or set(protocols) - {"batch", "sequential"}:
        parser.error("--protocols takes batch, sequential or both")
    if args.split == "select" and protocols != ["batch"]:
        parser.error("--split select runs the batch protocol only (--protocols batch): the "
                     "sequential probes are the last dev records")
    base_overrides = parse_hparams(parser, args.hparam)

    started = time.perf_counter()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - started
    everything = load_records(shared_data_dir() / "mcf_dev.json")
    if max(args.n, args.seq_n) + args.probe_records > len(everything):
        parser.error(f"{max(args.n, args.seq_n)} edited facts and {args.probe_records} probe records "
                     f"exceed the {len(everything)} MCF dev records")
    probes = [probes_only(r) for r in everything[len(everything) - args.probe_records:]]
    base_hp = preset_for(lm.name, lm.model).with_overrides(base_overrides)
    caches = EditorCaches(cache_dir(), None, ZCache(cache_dir() / "z"))
    base_editor = Editor(lm.model, lm.tokenizer, caches, hparams=base_hp, model_name=lm.name)
    earlier = json.loads(args.baseline.read_text())["variants"].get("preset") if args.baseline else None
    results: dict[str, dict[str, Any]] = {}
    payload = {"model": lm.name, "device": str(lm.device), "dtype": str(next(lm.model.parameters()).dtype),
               "split": args.split, "n": args.n, "seq_n": args.seq_n, "batches": args.batches, "probe_records": args.probe_records,
               "base_overrides": base_overrides, "load_s": load_s, "variants": results}
    order = sorted(args.variants, key=lambda name: name != "preset")  # the baseline first
    for name in order:
        variant = VARIANTS[name]
        hp = base_hp.with_overrides(variant.overrides(base_hp))
        editor = base_editor.with_hparams(hp)
        results[name] = {"about": variant.about, "questions": variant.questions, "hparams": hp.to_dict()}
        for protocol in protocols:
            mark = time.perf_counter()
            if protocol == "batch":
                batch = (everything[: args.n] if args.split == "dev"
                         else everything[len(everything) - args.n:])
                run = run_batch(editor, lm, batch, variant)
            else:
                run = run_sequential(editor, lm, everything[: args.seq_n], probes, args.batches, variant)
            run["wall_s"] = time.perf_counter() - mark
            preset = run if name == "preset" else results.get("preset", earlier or {}).get(protocol)
            run["checks"] = checks(run["metrics"], preset["metrics"] if preset else None, variant.questions)
            run["bounds"] = bounds(variant.questions)
            results[name][protocol] = run
            print(f"{name} {protocol}: {run['wall_s']:.1f} s", {k: _fmt(run["metrics"].get(k), k) for k in KEYS},
                  flush=True)
            write_json("chat_targets", payload, out=args.out)
    payload["total_s"] = time.perf_counter() - started
    path = write_json("chat_targets", payload, out=args.out)
    print_summary(results)
    print(f"total {payload['total_s']:.1f} s; wrote {path}")
    return payload


if __name__ == "__main__":
    main()
