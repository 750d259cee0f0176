"""Per-row weight additions: every row of a batch computes with its own version's weights.

A version is the base plus, on a few MLP output matrices, an addition ``ΔW = left @ right``
(``right`` None: ``left`` is the dense ΔW), in (out, in) orientation. A forward hook on each
such matrix adds ``x @ ΔWᵀ`` to the rows that carry it, grouping rows by version, so one
forward pass serves any mix of versions while the model keeps the base weights: no request
waits for a weight switch, and a version costs ``rank · (d_in + d_out)`` per token instead
of a copy of the model.

In a half-precision model the hooked rows compute the whole matrix product in float32
(``x Wᵀ + x ΔWᵀ``, cast back after), as the merged model does for an edited matrix held in
float32 (``editing.weights.precision.hold_in_float32``), so the two agree to float32 rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.specs import mlp_out, weight_out_in

Factors = tuple[torch.Tensor, torch.Tensor | None]
"""(left, right) with ΔW = left @ right, or (dense ΔW, None); (out, in) orientation."""


@dataclass(frozen=True, eq=False)
class Additions:
    """One version's additions: layer -> factors. Rows group by identity, so build one
    object per version and reuse it."""

    name: str
    layers: dict[int, Factors]

    def to(self, device: torch.device | str) -> Additions:
        return Additions(self.name, {
            layer: (left.to(device, torch.float32), None if right is None
                    else right.to(device, torch.float32))
            for layer, (left, right) in self.layers.items()})


class RowAdditions:
    """Forward hooks on a model's MLP output matrices that add each row's own ΔW.

    ``rows(per_row)`` sets, for the forward passes inside it, which :class:`Additions` each
    batch row carries (None: the base). Hooks are installed on demand for any layer a
    version touches and stay (a hook with no rows to add costs a dict lookup).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._hooked: set[int] = set()
        self._local = threading.local()

    def ensure(self, layers: Sequence[int]) -> None:
        for layer in layers:
            if layer not in self._hooked:
                mlp_out(self.model, layer).register_forward_hook(self._hook(layer))
                self._hooked.add(layer)

    @contextmanager
    def rows(self, per_row: Sequence[Additions | None]) -> Iterator[None]:
        groups: dict[int, list[tuple[Factors, list[int]]]] = {}
        by_version: dict[int, tuple[Additions, list[int]]] = {}
        for i, adds in enumerate(per_row):
            if adds is not None and adds.layers:
                by_version.setdefault(id(adds), (adds, []))[1].append(i)
        for adds, index in by_version.values():
            self.ensure(list(adds.layers))
            for layer, factors in adds.layers.items():
                groups.setdefault(layer, []).append((factors, index))
        self._local.groups = groups
        try:
            yield
        finally:
            self._local.groups = {}

    def _hook(self, layer: int):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            groups = getattr(self._local, "groups", {}).get(layer)
            if not groups:
                return output
            x = args[0]
            out = output.clone()
            for (left, right), index in groups:
                rows = torch.tensor(index, device=x.device)
                xs = x.index_select(0, rows).float()
                extra = xs @ left.T if right is None else (xs @ right.T) @ left.T
                if output.dtype == torch.float32:
                    out.index_copy_(0, rows, out.index_select(0, rows) + extra)
                else:  # as a matrix held in float32: the whole product in float32
                    weight = weight_out_in(self.model, layer).float()
                    bias = getattr(module, "bias", None)
                    full = F.linear(xs, weight, None if bias is None else bias.float())
                    out.index_copy_(0, rows, (full + extra).to(output.dtype))
            return out

        return hook
