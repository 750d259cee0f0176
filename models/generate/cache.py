"""The batch's KV cache as rows that come and go: left-padded, merged and pruned in place.

Rows join after their prefill (their cache is padded on the left to the batch's length and
stacked) and leave when finished (their rows are dropped, and columns that only padding
fills are cut), so a decode step always runs on exactly the rows in flight.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def _layers(cache: DynamicCache) -> list:  # noqa: ANN401
    return list(cache.layers)


def _pad_left(t: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - t.shape[-2]
    if missing <= 0:
        return t
    pad = t.new_zeros((*t.shape[:-2], missing, t.shape[-1]))
    return torch.cat([pad, t], dim=-2)


def merge(a: DynamicCache | None, mask_a: torch.Tensor | None, b: DynamicCache,
          mask_b: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Rows of ``a`` then rows of ``b``, both left-padded to the longer; masks likewise."""
    if a is None or mask_a is None or mask_a.shape[0] == 0:
        return b, mask_b
    length = max(mask_a.shape[1], mask_b.shape[1])
    for la, lb in zip(_layers(a), _layers(b), strict=True):
        la.keys = torch.cat([_pad_left(la.keys, length), _pad_left(lb.keys, length)], dim=0)
        la.values = torch.cat([_pad_left(la.values, length), _pad_left(lb.values, length)], dim=0)
    mask = torch.cat([
        torch.nn.functional.pad(mask_a, (length - mask_a.shape[1], 0)),
        torch.nn.functional.pad(mask_b, (length - mask_b.shape[1], 0)),
    ], dim=0)
    return a, mask


def keep_rows(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only ``rows`` (in order) and cut leading columns no kept row uses; the mask."""
    index = torch.tensor(rows, device=mask.device)
    mask = mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    mask = mask[:, start:]
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))[:, :, start:]
        layer.values = layer.values.index_select(0, index.to(layer.values.device))[:, :, start:]
    return mask
