"""The API process's runtime: the model keeps the base weights, versions are additions.

The worker edits, so it merges a version's deltas into the weights (:class:`ModelRuntime`).
The API only reads, and reads of many versions at once: here every version is the base
plus, per edited layer, the sum of its chain's low-rank updates
(:class:`models.generate.Additions`), added per batch row by the engine. Following a new
active version (or rolling back) builds that small object and flips a pointer: no weight
is written, no lock is taken, and no request waits.

What the service promised about merged weights still holds: :meth:`weights_digest` is the
library's :func:`editing.merged_weights_digest` of the chain, so ``/ready`` reports the same
digest as a process that merged it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from app.serving.runtime import ModelRuntime
from editing import LayerUpdate, merged_weights, merged_weights_digest
from models.generate import Additions

MAX_CACHED = 64
"""Versions whose additions stay built (each is a few rank-r factors per edited layer)."""


class AdditiveRuntime(ModelRuntime):
    """A :class:`ModelRuntime` whose model stays at the base; versions are additions."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._adds: OrderedDict[str, Additions | None] = OrderedDict()
        self._digests: dict[str, str] = {}
        self._adds_lock = threading.Lock()

    def additions(self, version: str) -> Additions | None:
        """The version's additions (None for the base); raises what the chain loader raises
        (:class:`app.serving.delta_source.UnusableDelta`) for a version whose weights cannot be built."""
        with self._adds_lock:
            if version in self._adds:
                self._adds.move_to_end(version)
                return self._adds[version]
        chain = self._chain_loader(version)
        for _, delta in chain:
            delta.check_compatible(self.lm.model, self.fingerprint)
        per_layer: dict[int, list[LayerUpdate]] = {}
        for _, delta in chain:
            for layer, update in delta.updates.items():
                per_layer.setdefault(layer, []).append(update)
        device = self.lm.model.get_input_embeddings().weight.device
        adds = None
        if per_layer:
            summed = {layer: LayerUpdate.summed(ups) for layer, ups in per_layer.items()}
            adds = Additions(version, {layer: (u.left, u.right) for layer, u in summed.items()}
                             ).to(device)
        with self._adds_lock:
            self._adds[version] = adds
            while len(self._adds) > MAX_CACHED:
                self._adds.popitem(last=False)
        return adds

    def set_active(self, version: str) -> None:
        """Serve ``version`` by default from now on; its additions are built first, so an
        unusable chain raises and leaves the active version unchanged."""
        self.additions(version)
        self.active = version

    def merged_weights(self, version: str) -> dict[int, torch.Tensor]:
        """Each layer ``version`` edits, as merging its chain gives it (for an hf export),
        computed by the library beside the model under the read lock."""
        deltas = [delta for _, delta in self._chain_loader(version)]
        with self.serving(self.base_id):  # the model's own matrices are the base's
            return merged_weights(self.lm.model, deltas)

    def weights_digest(self, version: str | None = None) -> str:
        """sha256 of the MLP output matrices ``version`` has when merged (what a process that
        merged its chain reports), computed by the library beside the model, so the engine
        goes on serving meanwhile (only the read lock is held, to read the base); cached."""
        version = version or self.active
        cached = self._digests.get(version)
        if cached is not None:
            return cached
        deltas = [delta for _, delta in self._chain_loader(version)]
        with self.serving(self.base_id):  # the model's own matrices are the base's
            self._digests[version] = merged_weights_digest(self.lm.model, deltas)
        return self._digests[version]
