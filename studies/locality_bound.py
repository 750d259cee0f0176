"""How far could a locality term built from held keys go? Hold other prompts' keys in the solve.

A study (not a benchmark, not run by CI). Last run at commit 7315e9a (2026-12-03);
its figures: docs/results/kl_corner.md.

An edit's neighbourhood KL on CounterFact comes mostly from the neighbours' *names* being moved
(``studies.kl_sources``). A locality term can only hold keys it can see. This bench adds
``w · Σ k kᵀ`` over the keys of a set of *held prompts* to every edited layer's regulariser
(next to the earlier edits' keys, computed on the model as edited so far, like the context
keys), edits the first N MCF dev records in one batch, and evaluates:

- ``--source neighbours``: the evaluation's own neighbourhood prompts. No service has them: this
  is the bound for any term that holds keys, with these layers and z.
- ``--source subject-variants``: the request's own prompt with one word of its subject swapped
  for a word of the tokenizer's vocabulary ("The mother tongue of Danielle Hair is"): can
  the solve learn that only the exact subject fires?
- ``--source other-subjects``: the request's own prompt filled with the subjects of other MCF
  records (never edited here, and not the last 100, which choose presets): a bank of names
  in the relation's words.

``--positions``: the held name's tokens (``names``, default), only its last token
(``last_name``), or every token of the held prompt (``all``). For the neighbourhood prompts
the names are their capitalised words (:data:`studies.kl_sources.NAME`).

    python -m studies.locality_bound --source neighbours --weights 0.3,1 --lambdas 1000,2000
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from bench.common import RESULTS, add_hparam_arg, add_method_arg, parse_hparams, table, write_json
from editing import Editor, EditState
from editing.evaluate.data import Record, load_records
from editing.evaluate.suite import evaluate
from editing.forward.batch import chunks, pad_id, pad_right
from editing.forward.hooks import capture, run_until
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model
from models.placement import input_device
from studies.kl_sources import class_mask, encode_with_names

SOURCES = ("neighbours", "subject-variants", "other-subjects")
POSITIONS = ("names", "last_name", "all")
REPORTED = ("efficacy_success", "efficacy_accuracy", "generalization_success", "generalization_accuracy",
            "specificity_success", "kl", "top1")


@dataclass(frozen=True)
class HeldPrompt:
    """A prompt whose keys the solve holds; ``name`` is the character span of the name in it
    (None: its capitalised words, as on CounterFact's neighbourhood prompts)."""

    text: str
    name: tuple[int, int] | None = None


def filled(prompt: str, name: str) -> HeldPrompt:
    """``prompt`` (one ``{}``) with ``name`` in it, the name's span marked."""
    start = prompt.index("{}")
    return HeldPrompt(prompt.format(name), (start, start + len(name)))


def vocabulary_words(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Capitalised alphabetic words of at least 4 letters that the tokenizer has as one token
    after a space: stand-ins for the words of a name, no data needed."""
    words = set()
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if text.startswith(" ") and len(text) >= 5 and text[1].isupper() and text[1:].isalpha():
            words.add(text[1:])
    return sorted(words)


def subject_variants(records: Sequence[Record], words: Sequence[str], per: int, rng: random.Random) -> list[HeldPrompt]:
    """``per`` variants of each request's subject in its own prompt: one word swapped, word by
    word in turn; a one-word subject gets a word before or after it."""
    held = []
    for record in records:
        parts = record.request.subject.split()
        for i in range(per):
            if len(parts) > 1:
                swapped = list(parts)
                swapped[i % len(parts)] = rng.choice(words)
                name = " ".join(swapped)
            else:
                word = rng.choice(words)
                name = f"{parts[0]} {word}" if i % 2 == 0 else f"{word} {parts[0]}"
            held.append(filled(record.request.prompt, name))
    return held


def other_subjects(records: Sequence[Record], bank: Sequence[str], per: int, rng: random.Random) -> list[HeldPrompt]:
    """Each request's own prompt filled with ``per`` subjects drawn from ``bank``."""
    return [filled(record.request.prompt, name) for record in records for name in rng.sample(list(bank), per)]


def neighbour_prompts(records: Sequence[Record]) -> list[HeldPrompt]:
    """The evaluation's own neighbourhood prompts (the oracle)."""
    return [HeldPrompt(prompt) for record in records for prompt in record.request.neighborhood_prompts]


def encode_held(tokenizer: PreTrainedTokenizerBase, held: HeldPrompt) -> tuple[list[int], list[bool]]:
    """Token ids and, per token, whether it overlaps the held prompt's name."""
    if held.name is None:
        return encode_with_names(tokenizer, held.text)
    start, end = held.name
    encoded = tokenizer(held.text, return_offsets_mapping=True)
    return list(encoded.input_ids), [b > a and a < end and start < b for a, b in encoded["offset_mapping"]]


def position_mask(kind: str, attention: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
    """(batch, length) bool: the positions whose keys are held."""
    if kind == "all":
        return class_mask("all", attention, names)
    if kind == "names":
        return names & attention.bool()
    last = torch.where(names, torch.arange(names.shape[1], device=names.device)[None, :], -1).max(1).values
    mask = torch.zeros_like(names)
    rows = torch.nonzero(last >= 0).flatten()
    mask[rows, last[rows]] = True
    return mask


@torch.no_grad()
def held_keys(model: nn.Module, encoded: Sequence[tuple[list[int], list[bool]]], pad: int, layer: int,
              positions: str, batch_size: int = 64) -> torch.Tensor:
    """(M, d_k) float64: the keys at ``layer`` of the held positions, on the model as it is."""
    device = input_device(model)
    out = []
    for part in chunks(len(encoded), batch_size):
        batch = encoded[part]
        ids, attention = pad_right([row_ids for row_ids, _ in batch], pad, device)
        names = torch.zeros_like(attention, dtype=torch.bool)
        for row, (_, flags) in enumerate(batch):
            names[row, : len(flags)] = torch.tensor(flags, dtype=torch.bool)
        with capture(model, (), (layer,), stop_after=layer) as seen:
            run_until(model, input_ids=ids, attention_mask=attention)
        keys = seen["key"][layer]
        out.append(keys[position_mask(positions, attention, names).to(keys.device)].double())
    return torch.cat(out)


@dataclass
class HeldPromptsState(EditState):
    """A first batch's state whose regulariser also holds ``held`` prompts' keys with weight
    ``weight``. The editor asks for :meth:`old_kkT` inside its layer loop, after the layers
    below have their updates, so the keys are those of the model as edited so far."""

    model: nn.Module | None = None
    encoded: list[tuple[list[int], list[bool]]] = field(default_factory=list)
    pad: int = 0
    positions: str = "names"
    weight: float = 0.0

    def old_kkT(self, layer: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        earlier = super().old_kkT(layer, device)
        if not self.weight or not self.encoded or self.model is None:
            return earlier
        keys = held_keys(self.model, self.encoded, self.pad, layer, self.positions).to(device)
        extra = self.weight * (keys.T @ keys)
        return extra if earlier is None else earlier + extra


def held_state(model: nn.Module, tokenizer: PreTrainedTokenizerBase, held: Sequence[HeldPrompt],
               positions: str, weight: float) -> HeldPromptsState:
    return HeldPromptsState(model=model, encoded=[encode_held(tokenizer, h) for h in held], pad=pad_id(tokenizer),
                            positions=positions, weight=weight)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="the first N MCF dev records, edited in one batch")
    parser.add_argument("--source", choices=SOURCES, default="neighbours")
    parser.add_argument("--positions", choices=POSITIONS, default="names")
    parser.add_argument("--per", type=int, default=10, help="held prompts per request (variants, other subjects)")
    parser.add_argument("--weights", default="0.3,1", help="w, comma-separated (0: the preset alone)")
    parser.add_argument("--lambdas", default=None, help="λ, comma-separated (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    add_method_arg(parser)
    add_hparam_arg(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        weights = [float(v) for v in args.weights.split(",")]
        lambdas = [float(v) for v in args.lambdas.split(",")] if args.lambdas else [None]
    except ValueError:
        parser.error("--weights and --lambdas take numbers separated by commas (0.3,1)")
    if any(w < 0 for w in weights):
        parser.error("--weights: every w must be at least 0")
    overrides = parse_hparams(parser, args.hparam)

    lm = load_model(args.model)
    everything = load_records(shared_data_dir() / "mcf_dev.json")
    records = everything[: args.n]
    rng = random.Random(args.seed)
    if args.source == "neighbours":
        held = neighbour_prompts(records)
    elif args.source == "subject-variants":
        held = subject_variants(records, vocabulary_words(lm.tokenizer), args.per, rng)
    else:
        held = other_subjects(records, sorted({r.request.subject for r in everything[args.n: -100]}), args.per, rng)
    preset = preset_for(lm.name, lm.model).with_overrides(overrides).with_method(args.method)
    rows = []
    for lam in lambdas:
        hp = preset if lam is None else preset.replace(covariance_weight=lam)
        editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                        z_cache=ZCache(cache_dir() / "z"))
        for weight in weights:
            state = held_state(lm.model, lm.tokenizer, held, args.positions, weight)
            delta = editor.edit([r.request for r in records], state=state).delta
            metrics = evaluate(lm.model, lm.tokenizer, records, delta, dataset="counterfact")
            rows.append({"lambda": hp.covariance_weight, "w": weight, **{k: metrics[k] for k in REPORTED}})
            print(rows[-1], flush=True)
    result = {"model": lm.name, "method": args.method, "n": len(records), "source": args.source,
              "positions": args.positions, "held_prompts": len(held), "examples": [h.text for h in held[:5]],
              "hparams": preset.to_dict(), "rows": rows}
    path = write_json("locality_bound", result, out=args.out_dir / f"locality_bound_{args.source}.json")
    print(table(["λ", "w", "efficacy S / A", "generalization S / A", "specificity", "KL", "top-1"],
                [[f"{r['lambda']:g}", f"{r['w']:g}", f"{r['efficacy_success']:g} / {r['efficacy_accuracy']:g}",
                  f"{r['generalization_success']:g} / {r['generalization_accuracy']:g}",
                  f"{r['specificity_success']:.1f}", f"{r['kl']:.4f}", f"{r['top1']:.1f}"] for r in rows]))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
