"""What an edit method is made of: a target strategy and a solver, each behind a Protocol.

A method (``fe``, ``memit``, ...) = *where the targets come from* (:class:`TargetStrategy`)
+ *how a layer's update is computed from keys and residuals* (:class:`Solver`). The Editor
drives the loop (statistics, keys, layers shallow to deep, deltas) and asks the strategy and
the solver only these questions, so a new solver or strategy is one class and one
:func:`editing.methods.registry.register_method` call (docs/design.md §4-§5).

Nothing here imports the rest of ``editing``: the registry and ``EditHparams`` can refer to
these types without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

Progress = Callable[[str, float], None]
Hidden = dict[int, torch.Tensor]
"""(N, d) hidden states per layer."""
Layers = tuple[int, ...]
Factors = tuple[torch.Tensor, torch.Tensor]
"""``(left, right)`` with ``Δ = left @ right``."""


class TargetSource(Protocol):
    """What a strategy may use of the Editor: the model, its hyper-parameters, and z."""

    model: torch.nn.Module
    tokenizer: Any
    hparams: Any
    batch_size: int

    def prefixes(self) -> list[str]: ...

    def z_at(self, requests: Sequence[Any], layer: int, progress: Progress | None = None) -> Any: ...


class TargetStrategy(Protocol):
    """Where each edited layer's target hidden state comes from."""

    name: str
    """The value stored as ``EditHparams.strategy`` (and in old deltas' info)."""

    def edited_layers(self, layers: Layers) -> Layers:
        """The layers whose weights change, out of the configured window."""
        ...

    def z_layers(self, layers: Layers) -> Layers:
        """The layers z is optimised at (what ``precompute-z`` caches), of the edited ones."""
        ...

    def targets(self, source: TargetSource, requests: Sequence[Any], progress: Progress | None
                ) -> tuple[Hidden, list[Any]]:
        """Absolute target hidden states per layer the residual reads, and the z results."""
        ...

    def h_on_templates(self, hparams: Any) -> bool:
        """Whether "h now" averages over every templated prompt (else the bare prompt)."""
        ...

    def residual(self, targets: Hidden, now: Hidden, step: int, layers: Layers) -> torch.Tensor:
        """(N, d) what layer ``layers[step]`` must add, given the hidden states ``now`` (at
        that layer and the last edited one) on the model as edited so far."""
        ...


class Solver(Protocol):
    """The update of one layer's MLP output matrix from its keys and residuals."""

    name: str
    # optional ``null_space = True``: the solver confines the update to the null space of the
    # preserved keys (AlphaEdit); :func:`editing.methods.is_null_space` reads it

    def solve(self, keys: torch.Tensor, residuals: torch.Tensor, cov: torch.Tensor,
              old_kkT: torch.Tensor | None, hparams: Any) -> Factors:
        """Factors ``(left, right)`` with ``Δ = left @ right``: ``keys`` (d_k, N),
        ``residuals`` (d, N), ``cov`` the (d_k, d_k) key statistics E[k kᵀ], ``old_kkT``
        Σ K Kᵀ of earlier batches (None when there are none or they are not used)."""
        ...


@dataclass(frozen=True)
class Method:
    """A registered edit method: a name users type, a strategy, a solver, one line of text."""

    name: str
    strategy: TargetStrategy
    solver: Solver
    description: str = ""
