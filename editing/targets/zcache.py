"""A disk cache of optimised z, so `precompute-z` work is reused by `edit`.

z depends on the model's current weights, the layer, the z hyper-parameters, the context
prefixes and the request; the key hashes all of them, so a cached z is never used for another
model state. The weights enter through :func:`editing.weights.fingerprint.weights_digest` of *every*
editable matrix: z at layer l is optimised on the layers above l, but the hidden state it
starts from (h at l) comes out of the layers below, so an edit anywhere changes z.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from editing.hparams import EditHparams
from editing.requests import EditRequest
from editing.weights.fingerprint import weights_digest
from models.files import atomic_write

Z_FIELDS = ("v_lr", "v_steps", "clamp_norm_factor", "weight_decay", "kl_factor", "nll_stop")
"""The z settings in the key, under their stored names (:meth:`EditHparams.to_stored`), so
keys do not change with the public names."""
Z_FIELDS_AT_DEFAULT = ("name_kl_factor", "name_context")
"""z settings added later (stored names): part of the key only when the stored form has them,
i.e. when they differ from their defaults, so z cached before they existed is still found."""


class ZCache:
    """Files ``<dir>/<key>.safetensors`` holding ``h`` and the z ``offset`` of one request."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def context_key(
        self, model: nn.Module, fingerprint: str, layer: int, hp: EditHparams, prefixes: Sequence[str]
    ) -> str:
        """Everything but the request: computed once per batch."""
        stored = hp.to_stored()
        payload = {
            "model": fingerprint,
            "weights": weights_digest(model),  # every layer: those below set h at ``layer``
            "layer": layer,
            "hp": {name: stored[name] for name in (*Z_FIELDS, *Z_FIELDS_AT_DEFAULT) if name in stored},
            "prefixes": list(prefixes),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _path(self, context: str, request: EditRequest) -> Path:
        fact = json.dumps([context, request.subject, request.prompt, request.target_new])
        return self.directory / f"{hashlib.sha256(fact.encode()).hexdigest()}.safetensors"

    def get(self, context: str, request: EditRequest) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        path = self._path(context, request)
        if not path.exists():
            return None
        saved = load_file(path)
        return saved["h"], saved["offset"], float(saved["nll"])

    def put(self, context: str, request: EditRequest, h: torch.Tensor, offset: torch.Tensor, nll: float) -> None:
        tensors = {"h": h.cpu().contiguous(), "offset": offset.cpu().contiguous(), "nll": torch.tensor(nll)}
        atomic_write(self._path(context, request), save(tensors))
