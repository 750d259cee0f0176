"""Padding token-id lists into batches (right padding: position ids stay 0..n-1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def pad_right(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of shape (len(seqs), longest)."""
    longest = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), max(longest, 1)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering range(n) in pieces of at most ``size``."""
    for start in range(0, n, max(size, 1)):
        yield slice(start, min(start + size, n))
