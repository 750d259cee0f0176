"""What one process serves: the model, its versions, their deltas and the runtime holding them.

The API and the worker each load these once (:func:`load_parts`); the composition root
(:mod:`app.services`) hands them to the rest of the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.serving.delta_source import DeltaSource
from app.serving.engine import ServingEngine
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from app.store import VersionStore
from editing import model_fingerprint
from models.device_map import parse_device_map
from models.load import LoadedModel, load_model


@dataclass
class ModelParts:
    """The model, its versions and the runtime serving them (shared by API and worker)."""

    lm: LoadedModel
    store: VersionStore
    deltas: DeltaSource
    runtime: ModelRuntime
    load_s: float
    engine: ServingEngine | None = None
    """Batches every query of this process (the API's; None in the worker)."""


def load_parts(settings: Settings, runtime_cls: type[ModelRuntime] = ModelRuntime) -> ModelParts:
    """Load the model once, open the store, and register the base version (the API passes
    :class:`~app.serving.additive.AdditiveRuntime`: it keeps the base weights and serves
    versions as additions)."""
    started = time.perf_counter()
    store = VersionStore(settings.data_path)
    lm = load_model(settings.model, settings.device, settings.dtype,
                    device_map=parse_device_map(settings.device_map))
    fingerprint = model_fingerprint(lm.model)
    base = store.ensure_base(lm.name, fingerprint)
    deltas = DeltaSource(store, lm.model, fingerprint)
    runtime = runtime_cls(lm, base.id, deltas.chain)
    return ModelParts(lm, store, deltas, runtime, time.perf_counter() - started)
