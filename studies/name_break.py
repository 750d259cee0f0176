"""Why an edit breaks the subject's name where the model writes it (issue 25, item 2).

A study (not a benchmark, not run by CI). Last run at commit 16cc8af (2026-12-04);
its figures: docs/results/chat.md.

The context is the evaluation's name-integrity one (:mod:`editing.evaluate.chat`): the record's
question in the chat template and the assistant repeating the sentence, teacher forced over
the subject's tokens. A record counts when the unedited model predicts at least two of them;
it is broken when the edited model stops predicting one. Here ΔW (the batch's dense update
per edited layer) is added at one class of positions of that context and nowhere else:

- ``all``: every position (the evaluation's figure);
- ``before_subject``: the template, the question and the sentence up to the subject;
- ``earlier_mention``: the subject's tokens where the question names it (part of
  ``before_subject``; its last token is a fact token to the edit, as in the prompts it
  was computed on);
- ``other_context``: ``before_subject`` but the earlier mention;
- ``subject_earlier``: the subject's tokens but its last one (the positions that predict the
  name's next token);
- ``subject_last``: the subject's last token (the fact token's counterpart: it predicts what
  follows the name, so it cannot break the name);

and, separately, each edited layer's ΔW alone at every position. It also reports how hard
the update fires: the mean ‖ΔW_l k‖ at each class, relative to its mean at the edited
prompts' fact tokens.

    python -m studies.name_break [--n 100] [--hparam key=JSON ...] [--model NAME]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from bench.common import RESULTS, add_hparam_arg, parse_hparams, table, write_json
from editing import Editor
from editing.evaluate.chat import UserView
from editing.evaluate.data import load_records
from editing.evaluate.scoring import encode_row
from editing.forward.batch import pad_id, pad_right
from editing.paths import shared_data_dir
from editing.presets import preset_for
from editing.requests import EditRequest
from editing.targets.zcache import ZCache
from models.load import cache_dir, load_model
from models.placement import input_device
from models.specs import mlp_out
from studies.kl_sources import delta_at

CLASSES = ("all", "before_subject", "earlier_mention", "other_context", "subject_earlier", "subject_last")

Row = tuple[list[int], int, list[int]]
"""The name context's ids through the subject, where the subject starts (its tokens are the
tail), and the positions of the subject's earlier mentions (in the question)."""


def name_rows(tokenizer: PreTrainedTokenizerBase, requests: Sequence[EditRequest]) -> list[Row]:
    view = UserView(tokenizer)
    out = []
    for req in requests:
        row = view.forms(req).name
        head, name = encode_row(tokenizer, row)
        spans, at = [], row.prompt.find(req.subject)
        while at >= 0:
            spans.append((at, at + len(req.subject)))
            at = row.prompt.find(req.subject, at + 1)
        offsets = tokenizer(row.prompt, return_offsets_mapping=True)["offset_mapping"]
        mentions = [i for i, (a, b) in enumerate(offsets) if b > a and any(a < e and s < b for s, e in spans)]
        out.append((head + name, len(head), mentions))
    return out


def masks(rows: Sequence[Row], width: int) -> dict[str, torch.Tensor]:
    """(rows, width) position masks of each class (right-padded rows)."""
    out = {kind: torch.zeros(len(rows), width, dtype=torch.bool) for kind in CLASSES}
    for i, (ids, start, mentions) in enumerate(rows):
        out["all"][i, : len(ids)] = True
        out["before_subject"][i, :start] = True
        out["earlier_mention"][i, mentions] = True
        out["other_context"][i, :start] = True
        out["other_context"][i, mentions] = False
        out["subject_earlier"][i, start : len(ids) - 1] = True
        out["subject_last"][i, len(ids) - 1] = True
    return out


@torch.no_grad()
def name_argmax(model: nn.Module, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row],
                updates: Mapping[int, torch.Tensor], where: torch.Tensor | None) -> list[torch.Tensor]:
    """Per row, the argmax at the positions that predict the subject's tokens, with ``updates``
    added at ``where`` (None: every position)."""
    ids, attention = pad_right([r[0] for r in rows], pad_id(tokenizer), input_device(model))
    mask = attention.bool() if where is None else where.to(attention.device)
    with delta_at(model, updates, mask):
        logits = model(input_ids=ids, attention_mask=attention).logits
    return [logits[i, start - 1 : len(seq) - 1].argmax(-1).cpu() for i, (seq, start, _) in enumerate(rows)]


@torch.no_grad()
def firing(model: nn.Module, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row],
           updates: Mapping[int, torch.Tensor], kinds: Mapping[str, torch.Tensor]) -> dict[int, dict[str, float]]:
    """Per layer and class, the mean ‖ΔW_l k‖ over the class's positions."""
    ids, attention = pad_right([r[0] for r in rows], pad_id(tokenizer), input_device(model))
    seen: dict[int, torch.Tensor] = {}

    def hook_for(layer: int, dense: torch.Tensor):
        def hook(_module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
            seen[layer] = (args[0].float() @ dense.T).norm(dim=-1).cpu()
        return hook

    handles = [mlp_out(model, layer).register_forward_hook(hook_for(layer, dense)) for layer, dense in updates.items()]
    try:
        model(input_ids=ids, attention_mask=attention)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: {kind: float(norms[mask].mean()) for kind, mask in kinds.items()}
            for layer, norms in seen.items()}


def broken_share(rows: Sequence[Row], base: Sequence[torch.Tensor],
                 edited: Sequence[torch.Tensor], min_tokens: int = 2) -> tuple[float, int]:
    """Percent of eligible records whose edited argmax loses a name token the base predicted."""
    broken = eligible = 0
    for (seq, start, _), b, e in zip(rows, base, edited, strict=True):
        name = torch.tensor(seq[start:])
        predicted = b == name
        if int(predicted.sum()) < min_tokens:
            continue
        eligible += 1
        broken += bool((e[predicted] != name[predicted]).any())
    return (100.0 * broken / eligible if eligible else float("nan")), eligible


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="the first N MCF dev records, edited in one batch")
    add_hparam_arg(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    lm = load_model(args.model)
    hp = preset_for(lm.name, lm.model).with_overrides(parse_hparams(parser, args.hparam))
    requests = [r.request for r in load_records(shared_data_dir() / "mcf_dev.json", limit=args.n)]
    editor = Editor(lm.model, lm.tokenizer, hparams=hp, model_name=lm.name, cache_dir=cache_dir(),
                    z_cache=ZCache(cache_dir() / "z"))
    delta = editor.edit(requests).delta
    updates = {layer: update.dense().float() for layer, update in delta.updates.items()}
    rows = name_rows(lm.tokenizer, requests)
    width = max(len(r[0]) for r in rows)
    kinds = masks(rows, width)
    base = name_argmax(lm.model, lm.tokenizer, rows, {}, None)
    by_class = {}
    for kind, mask in kinds.items():
        share, eligible = broken_share(rows, base, name_argmax(lm.model, lm.tokenizer, rows, updates, mask))
        by_class[kind] = share
    by_layer = {layer: broken_share(rows, base, name_argmax(lm.model, lm.tokenizer, rows, {layer: dense}, None))[0]
                for layer, dense in updates.items()}
    fired = firing(lm.model, lm.tokenizer, rows, updates, kinds)
    result = {"model": lm.name, "n": len(requests), "names_checked": eligible, "hparams": hp.to_dict(),
              "names_broken_by_positions": by_class, "names_broken_by_layer": by_layer,
              "update_norm_by_layer_and_positions": fired}
    path = write_json("name_break", result, out=args.out_dir / "name_break.json")
    print(table(["positions with ΔW", "names broken %"], [[k, f"{v:.1f}"] for k, v in by_class.items()]))
    print(table(["only layer's ΔW", "names broken %"], [[k, f"{v:.1f}"] for k, v in by_layer.items()]))
    print(table(["layer", *CLASSES], [[layer, *(f"{v[k]:.3f}" for k in CLASSES)] for layer, v in fired.items()]))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
