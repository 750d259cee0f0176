"""The prefix store's bookkeeping: longest shared prefix per version, capped where logits
are needed, entries that an extension replaces, and a token budget."""

from __future__ import annotations

import torch

from models.generate import Additions
from models.generate.prefix import PrefixStore, past_cache


def rows(tokens: list[int], layers: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Keys and values whose every entry is its token id (heads=1, dim=3)."""
    t = torch.tensor(tokens, dtype=torch.float32)[None, :, None].expand(1, len(tokens), 3)
    return [t.clone() for _ in range(layers)], [-t.clone() for _ in range(layers)]


def test_lookup_picks_the_longest_shared_prefix_of_the_same_version() -> None:
    store = PrefixStore(max_tokens=100)
    v1, v2 = Additions("v1", {}), Additions("v2", {})
    store.add(v1, [1, 2, 3, 4], *rows([1, 2, 3, 4]))
    store.add(v1, [1, 2, 9], *rows([1, 2, 9]))
    store.add(v2, [1, 2, 3, 4, 5], *rows([1, 2, 3, 4, 5]))
    entry, n = store.lookup(v1, [1, 2, 3, 4, 5, 6], limit=10)
    assert entry is not None and entry.tokens == [1, 2, 3, 4] and n == 4
    assert store.lookup(v1, [1, 2, 3, 4, 5, 6], limit=3)[1] == 3  # capped where logits start
    assert store.lookup(None, [1, 2, 3], limit=10) == (None, 0)  # the base stored nothing
    assert store.lookup(v1, [1, 7], limit=10) == (None, 0)  # below min_tokens
    assert store.covers(v1, [1, 2]) and not store.covers(v1, [1, 2, 3, 4, 5])


def test_an_extension_replaces_its_prefix_and_the_budget_evicts_the_oldest() -> None:
    store = PrefixStore(max_tokens=8)
    v = Additions("v", {})
    store.add(v, [1, 2, 3], *rows([1, 2, 3]))
    store.add(v, [1, 2, 3, 4], *rows([1, 2, 3, 4]))
    assert len(store) == 1 and store.covers(v, [1, 2, 3, 4])
    store.add(v, [5, 6, 7, 8, 9], *rows([5, 6, 7, 8, 9]))  # 9 tokens > 8: the oldest goes
    assert len(store) == 1 and not store.covers(v, [1, 2, 3])


def test_past_cache_left_pads_each_rows_prefix() -> None:
    store = PrefixStore(max_tokens=100)
    store.add(None, [1, 2, 3], *rows([1, 2, 3]))
    picks = [store.lookup(None, [1, 2, 3, 4], 3), (None, 0), store.lookup(None, [1, 2, 5], 2),
             store.lookup(None, [1, 2, 3], 2)]  # the last two share one copy
    cache, mask = past_cache(None, picks, torch.device("cpu"))
    assert mask.tolist() == [[1, 1, 1], [0, 0, 0], [0, 1, 1], [0, 1, 1]]
    keys = cache.layers[0].keys[:, 0, :, 0]
    assert keys.tolist() == [[1, 2, 3], [0, 0, 0], [0, 1, 2], [0, 1, 2]]
    assert cache.layers[1].values[2, 0, :, 0].tolist() == [0, -1, -2]
