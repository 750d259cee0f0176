"""Deltas of stored versions, parsed once and checked before anything applies them.

A version's delta never changes after commit (its file is named by its sha256), so parsed
deltas are cached by version id. Every read goes through ``VersionStore.read_delta`` (file
sha256) and ``WeightDelta.from_bytes`` (content hash), and every delta is checked against the
served model (architecture, shapes, base fingerprint): a corrupted or foreign delta raises
:class:`UnusableDelta` and is never applied.
"""

from __future__ import annotations

import threading

from torch import nn

from app.serving.runtime import Chain
from app.store import CorruptDelta, Version, VersionStore
from editing import DeltaError, WeightDelta


class UnusableDelta(RuntimeError):
    """A version whose weights cannot be built; the message says which one and what to do."""


class DeltaSource:
    """Loads the delta chains of versions from a store, for one model."""

    def __init__(self, store: VersionStore, model: nn.Module, fingerprint: str):
        self.store = store
        self.model = model
        self.fingerprint = fingerprint
        self._cache: dict[str, WeightDelta] = {}
        self._lock = threading.Lock()

    def delta(self, version: Version | str) -> WeightDelta:
        """The checked delta of one (non-base) version."""
        if isinstance(version, str):
            version = self.store.get_version(version)
        with self._lock:
            cached = self._cache.get(version.id)
        if cached is not None:
            return cached
        if version.is_base:
            raise UnusableDelta(f"version {version.id} is the base model; it has no delta")
        if version.state != "committed":
            raise UnusableDelta(
                f"version {version.id} is {version.state}"
                + (f" ({version.error})" if version.error else "")
                + "; roll back to a version before it"
            )
        try:
            delta = WeightDelta.from_bytes(self.store.read_delta(version))
            delta.check_compatible(self.model, self.fingerprint)
        except (CorruptDelta, DeltaError) as exc:
            raise UnusableDelta(
                f"the delta of version {version.id} was refused and not applied: {exc}"
            ) from exc
        with self._lock:
            self._cache[version.id] = delta
        return delta

    def remember(self, version_id: str, delta: WeightDelta) -> None:
        """Keep the delta this process has just committed as ``version_id`` (in its stored
        form, checked against the model), so the next job's chain never reads it back."""
        with self._lock:
            self._cache[version_id] = delta

    def chain(self, version_id: str) -> Chain:
        """``(id, delta)`` base-first for ``version_id`` (the base itself has no delta)."""
        return [(v.id, self.delta(v)) for v in self.store.chain(version_id) if not v.is_base]

    def deltas(self, version_id: str) -> list[WeightDelta]:
        return [d for _, d in self.chain(version_id)]
