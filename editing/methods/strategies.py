"""The four target strategies (docs/design.md §4).

- forward replay (FE): z at the *first* edited layer; a forward pass with z injected gives
  every later layer its own target, so each layer only fixes what the ones below left.
- backward spreading (MEMIT): z at the *last* edited layer; each layer takes an equal share of
  what is still missing there, ``(z − h_last) / layers_left``.
- per layer: z optimised separately at every edited layer (a baseline for FE's replay).
- one layer: z at the last layer, and only that layer edited (ROME-like, batched).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from editing.hparams import EditHparams
from editing.methods.base import Hidden, Layers, Progress, TargetSource
from editing.requests import EditRequest
from editing.targets import ZResult, replay_targets


class _SameLayerResidual:
    """Residual = this layer's target − this layer's hidden state now."""

    def residual(self, targets: Hidden, now: Hidden, step: int, layers: Layers) -> torch.Tensor:
        return targets[layers[step]] - now[layers[step]]

    def edited_layers(self, layers: Layers) -> Layers:
        return layers

    def h_on_templates(self, hparams: EditHparams) -> bool:
        return False


class ForwardReplay(_SameLayerResidual):
    name = "forward_replay"

    def z_layers(self, layers: Layers) -> Layers:
        return layers[:1]

    def targets(self, source: TargetSource, requests: Sequence[EditRequest], progress: Progress | None
                ) -> tuple[Hidden, list[ZResult]]:
        layers = source.hparams.edited_layers
        zres = source.z_at(requests, layers[0], progress)
        prefixes = source.prefixes() if source.hparams.replay_on_templates else [""]
        targets = replay_targets(
            source.model, source.tokenizer, requests, prefixes, zres, layers[1:], source.batch_size
        )
        targets[layers[0]] = zres.z
        return targets, [zres]

    def h_on_templates(self, hparams: EditHparams) -> bool:
        """The replay's variant over every prefix compares against the same average."""
        return bool(hparams.replay_on_templates)


class PerLayer(_SameLayerResidual):
    name = "per_layer"

    def z_layers(self, layers: Layers) -> Layers:
        return layers

    def targets(self, source: TargetSource, requests: Sequence[EditRequest], progress: Progress | None
                ) -> tuple[Hidden, list[ZResult]]:
        results = [source.z_at(requests, layer, progress) for layer in source.hparams.edited_layers]
        return {r.layer: r.z for r in results}, results


class _LastLayerZ:
    """z optimised at the last edited layer only."""

    def z_layers(self, layers: Layers) -> Layers:
        return layers[-1:]

    def targets(self, source: TargetSource, requests: Sequence[EditRequest], progress: Progress | None
                ) -> tuple[Hidden, list[ZResult]]:
        last = source.hparams.edited_layers[-1]
        zres = source.z_at(requests, last, progress)
        return {last: zres.z}, [zres]

    def h_on_templates(self, hparams: EditHparams) -> bool:
        return False


class BackwardSpread(_LastLayerZ):
    name = "backward_spread"

    def edited_layers(self, layers: Layers) -> Layers:
        return layers

    def residual(self, targets: Hidden, now: Hidden, step: int, layers: Layers) -> torch.Tensor:
        last = layers[-1]
        return (targets[last] - now[last]) / (len(layers) - step)


class OneLayer(_LastLayerZ, _SameLayerResidual):
    name = "one_layer"

    def edited_layers(self, layers: Layers) -> Layers:
        return layers[-1:]
