"""Where an edit's neighbourhood drift comes from: ΔW applied at some token positions only.

A study (not a benchmark, not run by CI). Last run at commit 7315e9a (2026-12-03);
its figures: docs/results/drift_sources.md.

CounterFact's neighbourhood KL reads the next-token distribution after prompts about *other*
subjects with the edited relation ("The mother tongue of Léon Blum is"). An edit adds ΔW to
the MLP output at every position of such a prompt; this bench adds it at one class of
positions and leaves the others unedited, then measures the same KL (unedited ‖ edited):

- ``all``: every position, which is the evaluation's KL;
- ``last``: the position whose next token is read;
- ``before_last``: every other position;
- ``names``: capitalised words that do not start the prompt, except the last position (on
  CounterFact, the neighbour's subject);
- ``rest``: the positions before the last that are not ``names`` (the relation's words);

and, separately, each edited layer's ΔW alone at every position (which layer drifts most).

Whose drift is it? A batch's update is a sum of one term per fact at every layer (ΔW = Σ_i
r_i a_iᵀ, the residual times the solved key, :mod:`editing.solve.closed_form`). ``--own`` applies to each
record's neighbourhood prompts only its own fact's terms, then only the batch's other facts'
terms: is a neighbour moved by the fact it neighbours (same relation, same true answer) or by
cross-talk from the rest of the batch? ``--grow 10,25,50,100`` edits the first N records for
each N and measures the first records' neighbourhood on the same prompts each time: how the
drift grows with the batch.

Which positions carry the drift says which keys a locality term must hold: the edit's own
prompt's other tokens (``context_key_weight``) are relation words, so they can only reach
``rest`` and ``last``. The classes are not additive (KL is not linear in ΔW), but they rank.

    python -m studies.kl_sources [--n 100] [--own] [--grow 10,25,50,100] [--hparam key=JSON ...]
                               [--model NAME]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from editing.forward.batch import chunks, pad_id, pad_right
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model
from models.placement import input_device
from models.specs import mlp_out

CLASSES = ("all", "last", "before_last", "names", "rest")
NAME = re.compile(r"[A-Z][^\s,]*")
"""A capitalised word: on CounterFact's neighbourhood prompts, mostly the subject's."""


def encode_with_names(tokenizer: PreTrainedTokenizerBase, prompt: str) -> tuple[list[int], list[bool]]:
    """``prompt``'s ids (with special tokens, as :func:`editing.forward.tokens.prompt_ids`) and, per
    token, whether it overlaps a capitalised word that does not start the prompt; one pass of
    the tokenizer."""
    spans = [m.span() for m in NAME.finditer(prompt) if m.start() > 0]
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    flags = [end > start and any(a < end and start < b for a, b in spans) for start, end in encoded["offset_mapping"]]
    return list(encoded.input_ids), flags


def class_mask(kind: str, attention: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
    """(batch, length) bool: the positions of ``kind`` (right-padded rows)."""
    real = attention.bool()
    position = torch.arange(real.shape[1], device=real.device)[None, :]
    last = position == (real.sum(1) - 1)[:, None]
    masks = {"all": real, "last": last, "before_last": real & ~last,
             "names": names & ~last, "rest": real & ~names & ~last}
    return masks[kind]


@contextmanager
def delta_at(model: nn.Module, updates: Mapping[int, torch.Tensor], where: torch.Tensor) -> Iterator[None]:
    """Add ``ΔW k`` to each edited layer's MLP output at the ``where`` positions only."""
    def hook_for(dense: torch.Tensor):
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            change = args[0].to(dense.dtype) @ dense.T
            return output + (change * where[..., None].to(change.device)).to(output.dtype)
        return hook

    handles = [mlp_out(model, layer).register_forward_hook(hook_for(dense)) for layer, dense in updates.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def next_token_logprobs(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                        updates: Mapping[int, torch.Tensor] | None = None, kind: str = "all",
                        batch_size: int = 32) -> torch.Tensor:
    """(len(prompts), vocab) log-probabilities of each prompt's next token, float32 on the CPU,
    with ``updates`` (dense ΔW per layer) applied at the ``kind`` positions (None: unedited)."""
    device = input_device(model)
    out = []
    for part in chunks(len(prompts), batch_size):
        batch = [encode_with_names(tokenizer, p) for p in prompts[part]]
        ids, attention = pad_right([row_ids for row_ids, _ in batch], pad_id(tokenizer), device)
        names = torch.zeros_like(attention, dtype=torch.bool)
        for row, (_, flags) in enumerate(batch):
            names[row, : len(flags)] = torch.tensor(flags, dtype=torch.bool)
        where = class_mask(kind, attention, names)
        last = attention.sum(1) - 1
        with delta_at(model, updates or {}, where):
            logits = model(input_ids=ids, attention_mask=attention).logits
        out.append(torch.log_softmax(logits[torch.arange(len(batch), device=logits.device), last].float(), -1).cpu())
    return torch.cat(out)


def kl_by_class(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                updates: Mapping[int, torch.Tensor], base: torch.Tensor | None = None) -> dict[str, float]:
    """Mean KL(unedited ‖ edited) over ``prompts`` for each position class of :data:`CLASSES`
    (``base``: the unedited log-probabilities, if already computed)."""
    base = next_token_logprobs(model, tokenizer, prompts) if base is None else base
    return {kind: float(kl_divergence(base, next_token_logprobs(model, tokenizer, prompts, updates, kind)).mean())
            for kind in CLASSES}


def kl_by_layer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                updates: Mapping[int, torch.Tensor], base: torch.Tensor | None = None) -> dict[int, float]:
    """Mean KL(unedited ‖ edited) over ``prompts`` with one edited layer's ΔW at a time."""
    base = next_token_logprobs(model, tokenizer, prompts) if base is None else base
    return {layer: float(kl_divergence(base, next_token_logprobs(model, tokenizer, prompts, {layer: dense})).mean())
            for layer, dense in updates.items()}


def fact_terms(delta: WeightDelta, fact: int) -> dict[int, torch.Tensor]:
    """Each edited layer's term of the batch's ``fact``-th request, ``r_i a_iᵀ`` (dense)."""
    terms = {}
    for layer, update in delta.updates.items():
        if update.right is None:
            raise ValueError(f"layer {layer}'s update is stored dense: its per-fact terms are lost "
                             "(a batch with more facts than the factors pay for)")
        terms[layer] = torch.outer(update.left[:, fact], update.right[fact]).float()
    return terms


def kl_own_and_others(model: nn.Module, tokenizer: PreTrainedTokenizerBase, records: Sequence[Record],
                      delta: WeightDelta) -> dict[str, float]:
    """Mean KL(unedited ‖ edited) over each record's neighbourhood prompts with the whole ΔW,
    with only the record's own fact's terms, and with only the batch's other facts' terms
    (``records`` in the batch's order; not additive, KL is not linear in ΔW)."""
    whole = {layer: update.dense().float() for layer, update in delta.updates.items()}
    kls: dict[str, list[torch.Tensor]] = {"all": [], "own fact": [], "other facts": []}
    for i, record in enumerate(records):
        prompts = record.request.neighborhood_prompts
        if not prompts:
            continue
        own = fact_terms(delta, i)
        variants = {"all": whole, "own fact": own,
                    "other facts": {layer: whole[layer] - own[layer] for layer in whole}}
        unedited = next_token_logprobs(model, tokenizer, prompts)
        for name, updates in variants.items():
            kls[name].append(kl_divergence(unedited, next_token_logprobs(model, tokenizer, prompts, updates)))
    return {name: float(torch.cat(values).mean()) for name, values in kls.items()}


def drift_as_batch_grows(editor: Editor, records: Sequence[Record], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """For each N in ``sizes``, smallest first: edit the first N records in one batch, then
    measure the first ``min(sizes)`` records (efficacy, and KL on their neighbourhood prompts:
    the same prompts for every N)."""
    watched = list(records[: min(sizes)])
    rows = []
    for n in sorted(set(sizes)):
        delta = editor.edit([r.request for r in records[:n]]).delta
        metrics = evaluate(editor.model, editor.tokenizer, watched, delta, dataset="counterfact")
        rows.append({"batch": n, "watched": len(watched), **{k: metrics[k] for k in (
            "efficacy_success", "efficacy_accuracy", "generalization_success", "kl", "top1")}})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="the first N MCF dev records, edited in one batch")
    add_method_arg(parser)
    add_hparam_arg(parser)
    parser.add_argument("--own", action="store_true",
                        help="also split each neighbourhood's KL into its own fact's terms and the others'")
    parser.add_argument("--grow", default=None, metavar="N,N,...",
                        help="batch sizes: edit the first N records for each, measure the first min(N)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        sizes = [int(v) for v in args.grow.split(",")] if args.grow else []
    except ValueError:
        parser.error(f"--grow takes batch sizes separated by commas (10,25,50,100), not {args.grow!r}")
    if any(n < 1 for n in sizes):
        parser.error("--grow: every batch size must be at least 1")
    overrides = parse_hparams(parser, args.hparam)

    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).with_overrides(overrides).with_method(args.method)
    records = load_records(shared_data_dir() / "mcf_dev.json")[: max([args.n, *sizes])]
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                    z_cache=ZCache(cache_dir() / "z"))
    grown = drift_as_batch_grows(editor, records, sizes) if sizes else []
    records = records[: args.n]
    delta = editor.edit([r.request for r in records]).delta
    updates = {layer: update.dense().float() for layer, update in delta.updates.items()}
    prompts = [p for r in records for p in r.request.neighborhood_prompts]
    unedited = next_token_logprobs(lm.model, lm.tokenizer, prompts)
    kl = kl_by_class(lm.model, lm.tokenizer, prompts, updates, unedited)
    by_layer = kl_by_layer(lm.model, lm.tokenizer, prompts, updates, unedited)
    result = {"model": lm.name, "method": args.method, "n": len(records), "prompts": len(prompts),
              "hparams": hp.to_dict(), "kl": kl, "kl_by_layer": by_layer}
    if args.own:
        result["kl_by_fact"] = kl_own_and_others(lm.model, lm.tokenizer, records, delta)
    if grown:
        result["grow"] = grown
    path = write_json("kl_sources", result, out=args.out_dir / "kl_sources.json")
    print(table(["positions with ΔW", "neighbourhood KL", "share of all"],
                [[kind, f"{value:.4f}", f"{value / kl['all']:.2f}"] for kind, value in kl.items()]))
    print(table(["only layer's ΔW (every position)", "neighbourhood KL", "share of all"],
                [[layer, f"{value:.4f}", f"{value / kl['all']:.2f}"] for layer, value in by_layer.items()]))
    if args.own:
        own = result["kl_by_fact"]
        print(table(["ΔW terms applied (each record's neighbourhood)", "neighbourhood KL", "share of all"],
                    [[name, f"{value:.4f}", f"{value / own['all']:.2f}"] for name, value in own.items()]))
    if grown:
        print(table(["facts in the batch", f"efficacy S / A of the first {grown[0]['watched']}",
                     "their neighbourhood KL", "top-1"],
                    [[g["batch"], f"{g['efficacy_success']:g} / {g['efficacy_accuracy']:g}",
                      f"{g['kl']:.4f}", g["top1"]] for g in grown]))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
