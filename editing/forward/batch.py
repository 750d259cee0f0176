"""Padding token-id lists into batches (right padding: position ids stay 0..n-1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedTokenizerBase


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad with: the pad token, else EOS (a masked position's value never matters,
    but it must be a real id)."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
    return int(pad)


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
