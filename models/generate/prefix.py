"""Prompt prefixes already computed, per version: their KV rows, reused by later prefills.

Requests often share the start of their prompt: a chat template's head and system prompt,
a question scored against several candidates, a client asking the same thing again. The
keys and values of a prefix depend only on its tokens and on the weights (the version), so a
prefill can start from a stored prefix and run the model only on the rest of the prompt.
On a CPU, where a prefill costs in proportion to its tokens, this is most of a short
request's work.

Entries are keyed by the version's :class:`~models.generate.rows.Additions` object itself
(held, so its identity cannot be reused by another version) and matched by the longest
common prefix with any stored prompt. A stored row comes from a batched pass, so it equals
a lone pass's keys and values to float rounding: the tolerance batching already has. The
weights under the engine must not change while entries live (the service's engine runs on
the base weights only; :meth:`PrefixStore.clear` otherwise).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from models.generate.rows import Additions


@dataclass(eq=False)
class Entry:
    """One stored prompt of one version: per layer, keys and values (heads, tokens, dim)."""

    additions: Additions | None
    tokens: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def common_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (a binary search on list slices,
    whose comparison runs in C: a scan of every entry per request stays cheap)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:  # the answer lies in [low, high]
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class PrefixStore:
    """A least-recently-used set of prompts' KV rows, bounded by their total tokens."""

    def __init__(self, max_tokens: int = 4096, min_tokens: int = 2):
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._tokens = 0
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0

    def lookup(self, additions: Additions | None, tokens: list[int], limit: int
               ) -> tuple[Entry | None, int]:
        """The stored entry sharing the most leading tokens with ``tokens`` (at most
        ``limit`` of them), and how many; (None, 0) when none shares ``min_tokens``."""
        best, length = None, 0
        for key, entry in self._entries.items():
            if entry.additions is not additions:
                continue
            n = min(common_length(entry.tokens, tokens), limit)
            if n > length:
                best, length = key, n
        if best is None or length < self.min_tokens:
            return None, 0
        self._entries.move_to_end(best)
        self.hits += 1
        self.reused_tokens += length
        return self._entries[best], length

    def covers(self, additions: Additions | None, tokens: list[int]) -> bool:
        """Whether a stored entry of this version starts with all of ``tokens``."""
        return any(e.additions is additions and len(e.tokens) >= len(tokens)
                   and common_length(e.tokens, tokens) == len(tokens)
                   for e in self._entries.values())

    def add(self, additions: Additions | None, tokens: list[int],
            keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Store a prompt's rows (copies, not views of a batch); drop the entries it extends
        and the least recently used ones beyond the token budget."""
        if len(tokens) < self.min_tokens or len(tokens) > self.max_tokens:
            return
        for key in [k for k, e in self._entries.items() if e.additions is additions
                    and common_length(e.tokens, tokens) == len(e.tokens)]:
            self._tokens -= len(self._entries.pop(key).tokens)
        entry = Entry(additions, list(tokens), keys, values)
        self._entries[id(entry)] = entry
        self._tokens += len(tokens)
        while self._tokens > self.max_tokens:
            _, old = self._entries.popitem(last=False)
            self._tokens -= len(old.tokens)


def past_cache(config: object, picks: list[tuple[Entry | None, int]],
               device: torch.device) -> tuple[DynamicCache, torch.Tensor]:
    """A cache holding each row's reused prefix, left-padded to the longest, and its mask."""
    cache = DynamicCache(config=config)
    longest = max((n for _, n in picks), default=0)
    mask = torch.zeros((len(picks), longest), dtype=torch.long, device=device)
    if not longest:
        return cache, mask
    groups: dict[tuple[int, int], tuple[Entry, list[int]]] = {}
    for i, (entry, n) in enumerate(picks):  # rows reusing the same rows fill in one copy
        if entry is not None and n:
            groups.setdefault((id(entry), n), (entry, []))[1].append(i)
    sample = next(iter(groups.values()))[0]
    index = {key: torch.tensor(rows, device=sample.keys[0].device)
             for key, (_, rows) in groups.items()}
    for layer in range(len(sample.keys)):
        shape = (len(picks), sample.keys[layer].shape[0], longest, sample.keys[layer].shape[-1])
        keys = sample.keys[layer].new_zeros(shape)
        values = sample.values[layer].new_zeros(shape)
        for (key, n), (entry, _) in groups.items():
            rows = index[(key, n)]
            keys[rows, :, longest - n:] = entry.keys[layer][:, :n]
            values[rows, :, longest - n:] = entry.values[layer][:, :n]
        cache.update(keys, values, layer)
    for i, (_, n) in enumerate(picks):
        if n:
            mask[i, longest - n:] = 1
    return cache, mask


def row_of(cache: DynamicCache, mask: torch.Tensor, row: int
           ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Copies of one row's keys and values at its real (unpadded) positions."""
    columns = mask[row].nonzero()[:, 0]
    keys, values = [], []
    for layer in cache.layers:
        keys.append(layer.keys[row].index_select(1, columns.to(layer.keys.device)))
        values.append(layer.values[row].index_select(1, columns.to(layer.values.device)))
    return keys, values
