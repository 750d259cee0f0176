"""Hashes that identify model weights: which base model, and which edited state.

Two questions, two digests, one way of hashing a tensor (its raw bytes):

- :func:`model_fingerprint`: *which base model* — config sizes and the input embeddings,
  which edits never touch, so every version of one base shares it (deltas check it).
- :func:`weights_digest`: *which edited state* — the MLP output matrices, the only weights
  edits change. Equal digests across processes mean bit-identical served weights; the z cache
  keys on it because z depends on every editable layer (docs/design.md §3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from models.specs import mlp_out_weight, num_layers


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, any device), as stored."""
    # reshape(-1) first: a (d, 1) transpose counts as contiguous but cannot be viewed as bytes
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_fingerprint(model: nn.Module) -> str:
    """Identify a base model by its config and input embeddings (never touched by edits)."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"):
        digest.update(f"{key}={config.get(key)}".encode())
    digest.update(tensor_bytes(model.get_input_embeddings().weight))
    return digest.hexdigest()


def weights_digest(model: nn.Module, layers: Iterable[int] | None = None,
                   replaced: Mapping[int, torch.Tensor] | None = None) -> str:
    """sha256 of the MLP output matrices of ``layers`` (default: every layer), in order,
    each with its index, shape and dtype; ``replaced`` stands in for the model's own matrix
    of the layers it names (weights computed beside the model, never written to it)."""
    digest = hashlib.sha256()
    replaced = replaced or {}
    for layer in range(num_layers(model)) if layers is None else layers:
        weight = replaced[layer] if layer in replaced else mlp_out_weight(model, layer)
        digest.update(f"{layer}:{tuple(weight.shape)}:{weight.dtype}".encode())
        digest.update(tensor_bytes(weight))
    return digest.hexdigest()
