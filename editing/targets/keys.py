"""Activations at the fact token: keys (MLP-output inputs) and block outputs.

Keys are averaged over the context prefixes of each request (docs/design.md §1), because the
update must map the subject's key to the new value whatever precedes it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import torch
from torch import nn

from editing.forward.batch import chunks, pad_right
from editing.forward.hooks import capture, run_until
from editing.targets.encoding import FactRow
from models.placement import input_device


def _forward_chunks(
    model: nn.Module,
    rows: Sequence[FactRow],
    pad_id: int,
    block_layers: Sequence[int],
    key_layers: Sequence[int],
    batch_size: int,
) -> Iterator[tuple[Sequence[FactRow], torch.Tensor, dict[str, dict[int, torch.Tensor]]]]:
    """Run ``rows`` in chunks of ``batch_size`` (right-padded, stopping after the deepest layer
    needed); yield each chunk, its attention mask and the captured blocks and keys."""
    device = input_device(model)
    deepest = max([*key_layers, *block_layers])
    for part in chunks(len(rows), batch_size):
        batch = rows[part]
        ids, mask = pad_right([r.ids for r in batch], pad_id, device)
        with capture(model, tuple(block_layers), tuple(key_layers), stop_after=deepest) as seen:
            run_until(model, input_ids=ids, attention_mask=mask)
        yield batch, mask, seen


def _fact_positions(batch: Sequence[FactRow], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row index, fact token index)`` of each row of a chunk."""
    return torch.arange(len(batch), device=device), torch.tensor([r.fact for r in batch], device=device)


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
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in key_layers}
    outs: dict[int, list[torch.Tensor]] = {layer: [] for layer in block_layers}
    for batch, mask, seen in _forward_chunks(model, rows, pad_id, block_layers, key_layers, batch_size):
        at, fact = _fact_positions(batch, mask.device)
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
def layer_keys(
    model: nn.Module,
    rows: Sequence[FactRow],
    pad_id: int,
    layer: int,
    context_rows: Collection[int] = (),
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """In one forward pass: the fact-token key of every row, (len(rows), d_k), and the keys of
    every other real token of the rows numbered in ``context_rows``, (M, d_k); float32.

    Why the second: those are the tokens a prompt about another subject shares with the edited
    one (the relation's words); keeping their keys' outputs in place is what
    ``context_key_weight`` asks of the solver. The bare prompts are among the templated rows,
    so their other tokens cost no pass of their own.
    """
    wanted = set(context_rows)
    facts: list[torch.Tensor] = []
    others: list[torch.Tensor] = []
    first = 0
    for batch, mask, seen in _forward_chunks(model, rows, pad_id, (), (layer,), batch_size):
        keys = seen["key"][layer]
        at, fact = _fact_positions(batch, mask.device)
        facts.append(_at_fact(keys, at, fact))
        keep = mask.bool().clone()
        keep[at, fact] = False
        keep &= torch.tensor([first + i in wanted for i in range(len(batch))], device=mask.device)[:, None]
        others.append(keys[keep.to(keys.device)].float())
        first += len(batch)
    return torch.cat(facts), torch.cat(others)
