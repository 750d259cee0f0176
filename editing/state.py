"""What sequential editing carries from batch to batch (docs/design.md §7).

A later batch must leave the earlier facts in place, so their keys join its regulariser
(``Σ K Kᵀ``, the MEMIT/AlphaEdit papers' way). That batch-by-batch solve is recursive least
squares: at a layer whose keys do not move, it equals one solve over every fact so far. What
does differ from one large batch is where each batch's targets come from, which is why the
state also keeps the updates the chain applied: with ``targets_from="base"`` the editor
takes them off while it computes the new targets (:meth:`Editor.edit`), or, where the state
holds the base's exact bits (``base``), puts those back for that step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from editing.weights.delta import BaseWeights, LayerUpdate, WeightDelta

Blocks = dict[int, list[torch.Tensor]]


@dataclass
class EditState:
    """The earlier batches of a chain of edits, per edited layer.

    ``keys`` are the facts' (d_k, N) keys, whose Gram matrix joins the regulariser so a later
    batch leaves the earlier key→value pairs in place; ``held`` further (d_k, M) columns kept
    the same way (√w · the earlier prompts' other tokens, ``context_key_weight``; they count
    no facts); ``applied`` the updates the chain added, in order: the model's weights are the
    base's plus their sum. ``base``, where known, is an exact copy of the edited matrices
    before the chain: base targets then see the base bit for bit (and the z cache, keyed by
    the weights' digest, finds what was computed on the base), where taking ``applied`` off
    gives the base only to float32 rounding.
    """

    keys: Blocks = field(default_factory=dict)
    held: Blocks = field(default_factory=dict)
    applied: dict[int, list[LayerUpdate]] = field(default_factory=dict)
    base: BaseWeights | None = None

    @property
    def n_facts(self) -> int:
        first = next(iter(self.keys.values()), [])
        return sum(k.shape[1] for k in first)

    def old_kkT(self, layer: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        """``Σ K Kᵀ`` (float64) of earlier batches' keys and held columns at ``layer``, or None.

        Computed on ``device`` (the solve's; None: the CPU, where the blocks are kept): after
        hundreds of facts with held columns the product is d_k × thousands × d_k, which a GPU
        does in milliseconds and a CPU in seconds.
        """
        blocks = self.keys.get(layer, []) + self.held.get(layer, [])
        if not blocks:
            return None
        k = torch.cat([b.to(device, torch.float64) for b in blocks], dim=1)
        return k @ k.T

    def extended(self, new_keys: dict[int, torch.Tensor],
                 new_held: dict[int, torch.Tensor] | None = None,
                 new_updates: dict[int, LayerUpdate] | None = None,
                 base: BaseWeights | None = None) -> EditState:
        """A new state with one more batch (this one is not modified); ``base``, if given,
        replaces this state's copy of the base weights."""
        applied = {layer: list(parts) for layer, parts in self.applied.items()}
        for layer, update in (new_updates or {}).items():
            applied.setdefault(layer, []).append(update)
        return EditState(_appended(self.keys, new_keys), _appended(self.held, new_held or {}), applied,
                         base if base is not None else self.base)

    def has_base_for(self, layers: Iterable[int]) -> bool:
        """Whether ``base`` holds the original bits of every one of ``layers``."""
        return self.base is not None and all(layer in self.base.tensors for layer in layers)

    @classmethod
    def from_deltas(cls, deltas: Iterable[WeightDelta], base: BaseWeights | None = None) -> EditState:
        """The state after a chain of deltas (each carries its batch's keys); ``base``: the
        exact weights before the chain, where the caller keeps them (the serving runtime does)."""
        state = cls(base=base)
        for delta in deltas:
            state = state.extended(delta.keys, delta.held_keys, delta.updates)
        return state


def _appended(blocks: Blocks, new: dict[int, torch.Tensor]) -> Blocks:
    """A copy of ``blocks`` with each layer's ``new`` block (float32, CPU) appended."""
    out = {layer: list(parts) for layer, parts in blocks.items()}
    for layer, k in new.items():
        out.setdefault(layer, []).append(k.detach().cpu().float())
    return out
