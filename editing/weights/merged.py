"""Weights a chain of deltas would give, computed beside the model without writing to it.

A server that keeps the base weights and adds each version's low-rank updates at run time
still owes its users the digest of the merged weights (what a process that merged the chain
reports). Computing them here, with the float operation :func:`add_layer_update` performs,
keeps the two digests equal by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from editing.weights.delta import WeightDelta, add_to_matrix
from editing.weights.fingerprint import weights_digest
from models.specs import mlp_out_weight, num_layers, spec_for


def merged_weights(model: nn.Module, deltas: Sequence[WeightDelta]) -> dict[int, torch.Tensor]:
    """Each edited layer's MLP output matrix as applying ``deltas`` in order to ``model`` gives
    it (float32, as :func:`~editing.weights.delta.add_layer_update` holds an edited matrix);
    layers no delta touches are left out. ``model`` must hold the weights the chain starts
    from; it is only read."""
    transposed = spec_for(model).transposed
    merged: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for layer in range(num_layers(model)):
            updates = [d.updates[layer] for d in deltas if layer in d.updates]
            if not updates:
                continue
            weight = mlp_out_weight(model, layer).detach().to(torch.float32, copy=True)
            for update in updates:
                add_to_matrix(weight, update, transposed)
            merged[layer] = weight
    return merged


def merged_weights_digest(model: nn.Module, deltas: Sequence[WeightDelta]) -> str:
    """:func:`~editing.weights.fingerprint.weights_digest` of ``model`` after applying ``deltas``
    in order, computed without changing ``model``."""
    return weights_digest(model, replaced=merged_weights(model, deltas))
