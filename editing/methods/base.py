"""What an edit method is made of: a target strategy and a solver, each behind a Protocol.

A method (``fe``, ``memit``, ...) = *where the targets come from* (:class:`TargetStrategy`)
+ *how a layer's update is computed from keys and residuals* (:class:`Solver`). The Editor
drives the loop (statistics, keys, layers shallow to deep, deltas) and asks the strategy and
the solver only these questions, so a new solver or strategy is one class and one
:func:`editing.methods.registry.register_method` call (docs/design.md §4-§5).

Each solver reads its settings as a small frozen config (``LeastSquaresConfig``,
``NullSpaceConfig``) that it builds from ``EditHparams`` in one place, :meth:`Solver.config`:
a solver never reads the flat ``EditHparams``, and a reader sees which settings it uses.

Nothing here imports ``editing.hparams`` or ``editing.targets`` (``EditHparams`` looks method
names up in the registry, which builds on these types; the layering test forbids the cycle):
what a strategy reads of the hyper-parameters and of z is typed structurally, by
:class:`MethodSettings` and :class:`ZTargets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from editing.requests import EditRequest

Progress = Callable[[str, float], None]
Hidden = dict[int, torch.Tensor]
"""(N, d) hidden states per layer."""
Layers = tuple[int, ...]
Factors = tuple[torch.Tensor, torch.Tensor]
"""``(left, right)`` with ``Δ = left @ right``."""


class MethodSettings(Protocol):
    """What a strategy reads of a call's hyper-parameters, and what a solver builds its config
    from: :class:`editing.hparams.EditHparams` is one (concrete solvers take it by name)."""

    @property
    def edited_layers(self) -> Layers: ...

    @property
    def replay_on_templates(self) -> bool: ...


class ZTargets(Protocol):
    """What a strategy reads of z at one layer: :class:`editing.targets.ZResult` is one."""

    layer: int

    @property
    def z(self) -> torch.Tensor:
        """(N, d) the target hidden states at ``layer``."""
        ...


class TargetSource(Protocol):
    """What a strategy may use of the Editor (which is one): the model, the call's
    hyper-parameters, the context prefixes, and z at a layer."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    hparams: MethodSettings
    batch_size: int

    def prefixes(self) -> list[str]: ...

    def z_at(self, requests: Sequence[EditRequest], layer: int,
             progress: Progress | None = None) -> ZTargets: ...


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

    def targets(self, source: TargetSource, requests: Sequence[EditRequest],
                progress: Progress | None) -> tuple[Hidden, list[ZTargets]]:
        """Absolute target hidden states per layer the residual reads, and the z results."""
        ...

    def h_on_templates(self, hparams: MethodSettings) -> bool:
        """Whether "h now" averages over every templated prompt (else the bare prompt)."""
        ...

    def residual(self, targets: Hidden, now: Hidden, step: int, layers: Layers) -> torch.Tensor:
        """(N, d) what layer ``layers[step]`` must add, given the hidden states ``now`` (at
        that layer and the last edited one) on the model as edited so far."""
        ...


ConfigT = TypeVar("ConfigT")
"""A solver's own frozen config dataclass."""


class Solver(Protocol[ConfigT]):
    """The update of one layer's MLP output matrix from its keys and residuals."""

    name: str
    null_space: bool
    """True when the update is confined to the null space of the preserved keys (AlphaEdit):
    the method's strength is then μ (``nullspace.l2``), and λ (``covariance_weight``) does
    not enter its solve. Read by :func:`editing.methods.is_null_space`."""

    def config(self, hparams: MethodSettings) -> ConfigT:
        """The settings this solver reads, out of ``hparams`` (the one place it reads them)."""
        ...

    def solve(self, keys: torch.Tensor, residuals: torch.Tensor, cov: torch.Tensor,
              old_kkT: torch.Tensor | None, config: ConfigT) -> Factors:
        """Factors ``(left, right)`` with ``Δ = left @ right``: ``keys`` (d_k, N),
        ``residuals`` (d, N), ``cov`` the (d_k, d_k) key statistics E[k kᵀ], ``old_kkT``
        Σ K Kᵀ of earlier batches (None when there are none or they are not used)."""
        ...


@dataclass(frozen=True)
class Method:
    """A registered edit method: a name users type, a strategy, a solver, one line of text."""

    name: str
    strategy: TargetStrategy
    solver: Solver[Any]
    description: str = ""

    @property
    def null_space(self) -> bool:
        """Whether its solver confines the update to the preserved keys' null space."""
        return self.solver.null_space
