"""A weight edit as a value: per-layer updates of MLP output matrices.

A ``WeightDelta`` is what an edit batch produces and what a version stores. It is applied on
top of known weights and reverted by restoring a snapshot of those weights (bit-identical),
never by subtracting: add-then-subtract drifts in floating point. Updates have rank at most
the number of facts, so they are kept factored (``left @ right``) when that is smaller.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from editing.weights.precision import held_dtype, hold_in_float32, release_float32
from models.files import atomic_write
from models.specs import mlp_out, mlp_out_weight, spec_for, weight_out_in

FORMAT_VERSION = "1"


class DeltaError(ValueError):
    """A delta that must not be applied: corrupted, or made for another model."""


@dataclass
class LayerUpdate:
    """The change of one layer's MLP output matrix, in (out, in) orientation.

    Dense when ``right`` is None (``left`` is the whole matrix), else ``left @ right``.
    """

    left: torch.Tensor
    right: torch.Tensor | None = None

    @classmethod
    def from_factors(cls, left: torch.Tensor, right: torch.Tensor) -> LayerUpdate:
        """Keep the factors when they hold fewer numbers than the dense product."""
        d_out, rank = left.shape
        d_in = right.shape[1]
        if rank * (d_out + d_in) < d_out * d_in:
            return cls(left.float().contiguous(), right.float().contiguous())
        return cls((left.double() @ right.double()).float())

    @classmethod
    def summed(cls, parts: Sequence[LayerUpdate]) -> LayerUpdate:
        """One update equal to ``parts`` added: factors side by side while all are factored
        (the dense product is formed at most once), else the dense sum."""
        if all(p.right is not None for p in parts):
            left = torch.cat([p.left for p in parts], dim=1)
            right = torch.cat([p.right for p in parts if p.right is not None], dim=0)
            return cls.from_factors(left, right)
        return cls(sum(p.dense() for p in parts))  # type: ignore[arg-type]

    @property
    def shape(self) -> tuple[int, int]:
        if self.right is None:
            return tuple(self.left.shape)  # type: ignore[return-value]
        return (self.left.shape[0], self.right.shape[1])

    @property
    def factored(self) -> bool:
        return self.right is not None

    def dense(self) -> torch.Tensor:
        """The full (out, in) update in float32 (computed the same way every time)."""
        if self.right is None:
            return self.left
        return self.left @ self.right

    def rank(self) -> int:
        """Numerical rank at float32 precision (the factors' small core when factored)."""
        if self.right is None:
            core = self.left.double()
        else:  # rank(L R) = rank(R_L R_Rᵀ) for L = Q_L R_L and Rᵀ = Q_R R_R: an r×r problem
            core = torch.linalg.qr(self.left.double())[1] @ torch.linalg.qr(self.right.double().T)[1].T
        singular = torch.linalg.svdvals(core)
        if singular.numel() == 0 or singular[0] == 0:
            return 0
        tol = singular[0] * max(self.shape) * torch.finfo(torch.float32).eps
        return int((singular > tol).sum())

    def norm(self) -> float:
        return float(self.dense().double().norm())


def resident_weight(model: nn.Module, layer: int) -> torch.nn.Parameter:
    """The MLP output weight of ``layer``, refusing one that accelerate offloaded.

    An offloaded weight is a placeholder on the ``meta`` device whose real values live in
    an offload store; writing to the placeholder would change nothing, silently.
    """
    weight = mlp_out_weight(model, layer)
    if weight.device.type == "meta":
        raise DeltaError(
            f"layer {layer}'s MLP output matrix is offloaded (device_map put it on disk or "
            "CPU offload), so it cannot be edited in place; give the edited layers a device "
            "in the device map (e.g. more max_memory, or device_map='auto' on a larger GPU)"
        )
    return weight


def add_layer_update(model: nn.Module, layer: int, update: LayerUpdate) -> None:
    """``W += update`` in the weight's orientation (the one way weights change).

    In a bfloat16/float16 model the edited matrix is first held in float32
    (:func:`editing.weights.precision.hold_in_float32`): rounding ``W + update`` back to half
    precision would lose much of a small edit. :meth:`BaseWeights.restore` puts the
    original half-precision bits back.
    """
    weight = resident_weight(model, layer)
    if weight.dtype != torch.float32:
        hold_in_float32(mlp_out(model, layer))
    with torch.no_grad():
        add_to_matrix(weight, update, spec_for(model).transposed)


def add_to_matrix(weight: torch.Tensor, update: LayerUpdate, transposed: bool) -> None:
    """``weight += update`` on a float32 matrix in the model's orientation: the one float
    operation behind every edited weight, so a digest of weights merged beside the model
    (:mod:`editing.weights.merged`) equals the digest of the model they were merged into."""
    dense = update.dense().to(weight.device, torch.float32)
    weight.add_(dense.T if transposed else dense)


def restore_weight(model: nn.Module, layer: int, saved: torch.Tensor) -> None:
    """Put ``saved`` (an exact copy) back as the layer's weight, in its own dtype: a matrix
    held in float32 for editing returns to half precision for a copy of the half-precision
    base, and a half-precision matrix is held in float32 again for a copy of an edited one."""
    module = mlp_out(model, layer)
    if held_dtype(module) == saved.dtype:
        release_float32(module)
    elif saved.dtype == torch.float32 and module.weight.dtype != torch.float32:
        hold_in_float32(module)
    with torch.no_grad():
        module.weight.copy_(saved)


@dataclass
class BaseWeights:
    """Exact copies of the matrices a delta is about to change, for a bit-identical revert."""

    tensors: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def snapshot(cls, model: nn.Module, layers: Iterable[int]) -> BaseWeights:
        return cls().keep(model, layers)

    def keep(self, model: nn.Module, layers: Iterable[int], device: torch.device | str | None = None) -> BaseWeights:
        """Copy the layers not copied yet (a copy already held is of the older weights: the
        serving runtime keeps the base bits of every layer any delta of a chain changes), on
        ``device`` (default: the weight's own)."""
        for layer in layers:
            if layer not in self.tensors:
                weight = resident_weight(model, layer).detach()
                self.tensors[layer] = weight.to(device, copy=True) if device is not None else weight.clone()
        return self

    def restore(self, model: nn.Module) -> None:
        for layer, saved in self.tensors.items():
            restore_weight(model, layer, saved)


@dataclass
class WeightDelta:
    """Per-layer updates plus what is needed to check they fit a model."""

    updates: dict[int, LayerUpdate]
    model_name: str = ""
    model_type: str = ""
    base_fingerprint: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (method, number of facts, ...)."""
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per layer, the (d_k, N) keys of the batch: later batches must keep them (old-keys term)."""
    base_dtype: str = ""
    """The dtype of the weights the delta was computed on (``bfloat16``, ...); the factors
    themselves are always float32. Empty for deltas written before it was recorded."""
    held_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per layer, (d_k, M) further columns later batches keep in their regulariser next to
    ``keys``: √w · the keys of the batch prompts' other tokens (``context_key_weight`` w).
    Empty without it, and in deltas written before it existed."""

    @property
    def layers(self) -> list[int]:
        return sorted(self.updates)

    # -- applying ----------------------------------------------------------------------
    def check_compatible(self, model: nn.Module, fingerprint: str | None = None) -> None:
        """Raise :class:`DeltaError` unless every update fits ``model`` (type, shapes, base)."""
        model_type = model.config.model_type
        if self.model_type and self.model_type != model_type:
            raise DeltaError(f"delta is for model_type {self.model_type!r}, model is {model_type!r}")
        dtype = model_dtype(model)
        if self.base_dtype and self.base_dtype != dtype:
            raise DeltaError(
                f"delta was computed on {self.base_dtype} weights and this model is loaded in "
                f"{dtype}; load it in {self.base_dtype} (--dtype, MODELEDIT_DTYPE)"
            )
        if fingerprint and self.base_fingerprint and fingerprint != self.base_fingerprint:
            raise DeltaError(
                f"delta was made for base model {self.base_fingerprint[:12]}…, "
                f"this model is {fingerprint[:12]}…"
            )
        for layer, update in self.updates.items():
            try:
                expected = tuple(weight_out_in(model, layer).shape)
            except (IndexError, AttributeError) as exc:
                raise DeltaError(f"layer {layer} does not exist in this model") from exc
            if update.shape != expected:
                raise DeltaError(f"layer {layer}: update shape {update.shape} != weight {expected}")

    def apply(self, model: nn.Module) -> BaseWeights:
        """Add the updates in place; return the overwritten weights for :meth:`revert`."""
        self.check_compatible(model)
        base = BaseWeights.snapshot(model, self.layers)
        for layer in self.layers:
            add_layer_update(model, layer, self.updates[layer])
        return base

    @staticmethod
    def revert(model: nn.Module, base: BaseWeights) -> None:
        """Restore exactly the weights :meth:`apply` overwrote."""
        base.restore(model)

    @classmethod
    def combine(cls, deltas: list[WeightDelta]) -> WeightDelta:
        """One delta equal to several applied in order (factors concatenated, keys too).

        Float sums may differ from sequential application in the last bits; a version store
        keeps deltas separate for that reason, this is for exporting one file.
        """
        if not deltas:
            raise ValueError("nothing to combine")
        first = deltas[0]
        updates: dict[int, LayerUpdate] = {}
        for layer in sorted({layer for d in deltas for layer in d.layers}):
            updates[layer] = LayerUpdate.summed([d.updates[layer] for d in deltas if layer in d.updates])
        info = {**first.info, "combined_batches": len(deltas),
                "n_requests": sum(int(d.info.get("n_requests", 0)) for d in deltas)}
        return cls(updates, first.model_name, first.model_type, first.base_fingerprint,
                   first.hparams, info, _concat_columns([d.keys for d in deltas]), first.base_dtype,
                   held_keys=_concat_columns([d.held_keys for d in deltas]))

    # -- persistence ---------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            update = self.updates[layer]
            out[f"layer.{layer}.left"] = update.left.detach().cpu().float().contiguous()
            if update.right is not None:
                out[f"layer.{layer}.right"] = update.right.detach().cpu().float().contiguous()
        for layer, keys in self.keys.items():
            out[f"layer.{layer}.keys"] = keys.detach().cpu().float().contiguous()
        for layer, held in self.held_keys.items():  # absent without: older hashes unchanged
            out[f"layer.{layer}.held_keys"] = held.detach().cpu().float().contiguous()
        return out

    def stored(self) -> WeightDelta:
        """This delta exactly as :meth:`to_bytes` stores it (float32 tensors on the CPU), so
        weights computed from it in memory equal those of the delta read back from its file:
        a caller that applies, digests and commits one delta needs no round trip through bytes.
        """
        tensors = self._tensors()
        updates = {layer: LayerUpdate(tensors[f"layer.{layer}.left"],
                                      tensors.get(f"layer.{layer}.right"))
                   for layer in self.layers}
        return replace(
            self, updates=updates,
            keys={layer: tensors[f"layer.{layer}.keys"] for layer in self.keys},
            held_keys={layer: tensors[f"layer.{layer}.held_keys"] for layer in self.held_keys},
            hparams=json.loads(json.dumps(self.hparams, sort_keys=True)),
            info=json.loads(json.dumps(self.info, sort_keys=True, default=str)),
        )

    def _header(self) -> dict[str, str]:
        dtype = {"base_dtype": self.base_dtype} if self.base_dtype else {}
        return {
            **dtype,
            "format": FORMAT_VERSION,
            "model_name": self.model_name,
            "model_type": self.model_type,
            "base_fingerprint": self.base_fingerprint,
            "layers": json.dumps(self.layers),
            "hparams": json.dumps(self.hparams, sort_keys=True),
            "info": json.dumps(self.info, sort_keys=True, default=str),
        }

    @property
    def sha256(self) -> str:
        """Content hash over tensors and header, independent of file layout."""
        return _content_hash(self._tensors(), self._header())

    def to_bytes(self) -> bytes:
        header = self._header()
        tensors = self._tensors()
        header["sha256"] = _content_hash(tensors, header)
        return st_save(tensors, metadata=header)

    @classmethod
    def from_bytes(cls, data: bytes) -> WeightDelta:
        """Parse and verify a saved delta; :class:`DeltaError` if it is corrupted."""
        try:
            tensors = st_load(data)
            header = _read_metadata(data)
        except Exception as exc:  # safetensors raises several types for garbage input
            raise DeltaError(f"not a valid delta file: {exc}") from exc
        stored = header.pop("sha256", None)
        if stored is None or header.get("format") != FORMAT_VERSION:
            raise DeltaError("not a delta file of this tool (no sha256/format in its metadata)")
        actual = _content_hash(tensors, header)
        if actual != stored:
            raise DeltaError(f"delta content hash {actual[:12]}… does not match its record {stored[:12]}…")
        try:
            updates, keys, held = {}, {}, {}
            for layer in json.loads(header["layers"]):
                left = tensors[f"layer.{layer}.left"]
                right = tensors.get(f"layer.{layer}.right")
                updates[int(layer)] = LayerUpdate(left, right)
                if f"layer.{layer}.keys" in tensors:
                    keys[int(layer)] = tensors[f"layer.{layer}.keys"]
                if f"layer.{layer}.held_keys" in tensors:
                    held[int(layer)] = tensors[f"layer.{layer}.held_keys"]
            return cls(
                updates=updates,
                model_name=header["model_name"],
                model_type=header["model_type"],
                base_fingerprint=header["base_fingerprint"],
                hparams=json.loads(header["hparams"]),
                info=json.loads(header["info"]),
                keys=keys,
                base_dtype=header.get("base_dtype", ""),
                held_keys=held,
            )
        except (KeyError, ValueError) as exc:
            raise DeltaError(f"delta file is missing {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write atomically (temp file, fsync, rename); return the sha256."""
        data = self.to_bytes()
        atomic_write(Path(path), data)
        return self.sha256

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WeightDelta:
        return cls.from_bytes(Path(path).read_bytes())


def _content_hash(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        # reshape(-1) first: a (d, 1) transpose counts as contiguous but cannot be viewed as bytes
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _read_metadata(data: bytes) -> dict[str, str]:
    size = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + size]).get("__metadata__", {}))


def model_dtype(model: nn.Module) -> str:
    """The dtype a model was loaded in (``float32``, ``bfloat16``, ``float16``).

    Read from the input embeddings, which edits never touch.
    """
    return str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")


def _concat_columns(per_delta: list[dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Per layer, the (d_k, ·) blocks of several deltas side by side, in order."""
    return {
        layer: torch.cat([blocks[layer] for blocks in per_delta if layer in blocks], dim=1)
        for layer in sorted({layer for blocks in per_delta for layer in blocks})
    }
