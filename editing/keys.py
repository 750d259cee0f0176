"""Activations at the fact token: keys (MLP-output inputs) and block outputs.

Keys are averaged over the context prefixes of each request (docs/design.md §1), because the
update must map the subject's key to the new value whatever precedes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from editing.batch import chunks, pad_right
from editing.encoding import FactRow
from editing.hooks import capture, run_until
from models.placement import input_device


@torch.no_grad()
def fact_activations(
    model: nn.Module,
    rows: Sequence[FactRow],
    pad_id: int,
    key_layers: Sequence[int] = (),
    block_layers: Sequence[int] = (),
    batch_size: int = 64,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per row, the key and the block output at its fact token, for the given layers.

    The forward pass stops after the deepest layer needed. Returns ``(keys, blocks)`` as
    ``{layer: (len(rows), dim)}`` float32 tensors, each on the device of its layer.
    """
    device = input_device(model)
    deepest = max([*key_layers, *block_layers])
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in key_layers}
    outs: dict[int, list[torch.Tensor]] = {layer: [] for layer in block_layers}
    for part in chunks(len(rows), batch_size):
        batch = rows[part]
        ids, mask = pad_right([r.ids for r in batch], pad_id, device)
        at = torch.arange(len(batch), device=device)
        fact = torch.tensor([r.fact for r in batch], device=device)
        with capture(model, tuple(block_layers), tuple(key_layers), stop_after=deepest) as seen:
            run_until(model, input_ids=ids, attention_mask=mask)
        for layer in key_layers:
            keys[layer].append(_at_fact(seen["key"][layer], at, fact))
        for layer in block_layers:
            outs[layer].append(_at_fact(seen["block"][layer], at, fact))
    return ({k: torch.cat(v) for k, v in keys.items()}, {k: torch.cat(v) for k, v in outs.items()})


def _at_fact(values: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``values[rows, positions]`` in float32, on the device ``values`` were computed on."""
    return values[rows.to(values.device), positions.to(values.device)].float()


def mean_by_request(values: torch.Tensor, rows: Sequence[FactRow], n_requests: int) -> torch.Tensor:
    """Average row values per request: (rows, dim) -> (n_requests, dim)."""
    index = torch.tensor([r.request for r in rows], device=values.device)
    total = torch.zeros(n_requests, values.shape[1], dtype=values.dtype, device=values.device)
    total.index_add_(0, index, values)
    counts = torch.bincount(index, minlength=n_requests).clamp(min=1).to(values.dtype)
    return total / counts[:, None]


@torch.no_grad()
def context_keys(
    model: nn.Module, rows: Sequence[FactRow], pad_id: int, layer: int, batch_size: int = 64
) -> torch.Tensor:
    """(M, d_k) float32 keys at ``layer`` of every real token of ``rows`` but the fact token.

    Why: these are the tokens a prompt about another subject shares with the edited one (the
    relation's words); keeping their keys' outputs in place is what ``context_key_weight``
    asks of the solver.
    """
    device = input_device(model)
    found: list[torch.Tensor] = []
    for part in chunks(len(rows), batch_size):
        batch = rows[part]
        ids, mask = pad_right([r.ids for r in batch], pad_id, device)
        with capture(model, (), (layer,), stop_after=layer) as seen:
            run_until(model, input_ids=ids, attention_mask=mask)
        keys = seen["key"][layer]
        keep = mask.bool().clone()
        keep[torch.arange(len(batch), device=device), torch.tensor([r.fact for r in batch], device=device)] = False
        found.append(keys[keep.to(keys.device)].float())
    return torch.cat(found)
