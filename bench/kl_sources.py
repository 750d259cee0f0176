"""Where an edit's neighbourhood drift comes from: ΔW applied at some token positions only.

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

Which positions carry the drift says which keys a locality term must hold: the edit's own
prompt's other tokens (``context_key_weight``) are relation words, so they can only reach
``rest`` and ``last``. The classes are not additive (KL is not linear in ΔW), but they rank.

    python -m bench.kl_sources [--n 100] [--hparam key=JSON ...] [--model NAME]
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
from editing import Editor
from editing.batch import chunks, pad_id, pad_right
from editing.evaluate.data import load_records
from editing.evaluate.metrics import kl_divergence
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.zcache import ZCache
from models.load import cache_dir, load_model
from models.placement import input_device
from models.specs import mlp_out

CLASSES = ("all", "last", "before_last", "names", "rest")
NAME = re.compile(r"[A-Z][^\s,]*")
"""A capitalised word: on CounterFact's neighbourhood prompts, mostly the subject's."""


def encode_with_names(tokenizer: PreTrainedTokenizerBase, prompt: str) -> tuple[list[int], list[bool]]:
    """``prompt``'s ids (with special tokens, as :func:`editing.tokens.prompt_ids`) and, per
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="the first N MCF dev records, edited in one batch")
    add_method_arg(parser)
    add_hparam_arg(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    overrides = parse_hparams(parser, args.hparam)

    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).with_overrides(overrides).with_method(args.method)
    records = load_records(shared_data_dir() / "mcf_dev.json")[: args.n]
    editor = Editor(lm.model, lm.tokenizer, hp, model_name=lm.name, cache_dir=cache_dir(),
                    z_cache=ZCache(cache_dir() / "z"))
    delta = editor.edit([r.request for r in records]).delta
    updates = {layer: update.dense().float() for layer, update in delta.updates.items()}
    prompts = [p for r in records for p in r.request.neighborhood_prompts]
    unedited = next_token_logprobs(lm.model, lm.tokenizer, prompts)
    kl = kl_by_class(lm.model, lm.tokenizer, prompts, updates, unedited)
    by_layer = kl_by_layer(lm.model, lm.tokenizer, prompts, updates, unedited)
    result = {"model": lm.name, "method": args.method, "n": len(records), "prompts": len(prompts),
              "hparams": hp.to_dict(), "kl": kl, "kl_by_layer": by_layer}
    path = write_json("kl_sources", result, out=args.out_dir / "kl_sources.json")
    print(table(["positions with ΔW", "neighbourhood KL", "share of all"],
                [[kind, f"{value:.4f}", f"{value / kl['all']:.2f}"] for kind, value in kl.items()]))
    print(table(["only layer's ΔW (every position)", "neighbourhood KL", "share of all"],
                [[layer, f"{value:.4f}", f"{value / kl['all']:.2f}"] for layer, value in by_layer.items()]))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
