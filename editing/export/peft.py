"""A version's change as a PEFT LoRA adapter, so LoRA servers (vLLM, TGI, PEFT) can serve it.

Every edit adds ``left @ right`` to the MLP output matrix of a few layers, so a version
(base + its chain of deltas) differs from the base by a low-rank matrix per edited layer:
exactly what LoRA expresses, ``W' = W + scaling * lora_B @ lora_A``. Writing that instead of a
merged checkpoint lets one base model in a LoRA server carry every version at once (one adapter
name per version) for a few MB each.

Exactness: by default the factors of the chain are concatenated (rank = the sum of the chain's
factor ranks; a dense update, or a chain holding more directions than the matrix can have, is
reduced by an SVD to its numerical rank at float32 precision), so ``lora_B @ lora_A`` equals
the sum of the deltas up to float32 rounding.
``tol`` > 0 compresses each layer with a truncated SVD whose relative Frobenius error is at most
``tol``. The rank is then padded with zero rows/columns to the next rank vLLM accepts, and
``lora_alpha = r`` so the scaling is exactly 1.

``adapter_config.json`` is written by PEFT's own ``LoraConfig.save_pretrained``; its
``base_model_name_or_path`` is what the caller names (the weights the deltas were computed on:
a Hub id, or the path of an exported base checkpoint), so
``AutoPeftModelForCausalLM.from_pretrained(adapter_dir)`` finds the base by itself. This module
needs torch, safetensors, PEFT and :mod:`models.specs`; no service.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from editing.weights.delta import LayerUpdate, WeightDelta
from models.files import atomic_write
from models.specs import ArchSpec, spec_for

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The ``--max-lora-rank`` values vLLM accepts (its ``LoRAConfig``); adapters are padded to one."""
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model"
"""PEFT saves ``PeftModel`` keys without the adapter name, under this prefix."""
_LEAVES_SHARED_WITH_ATTENTION = frozenset({"c_proj"})
"""Leaf names the attention block also uses (GPT-2's ``attn.c_proj``): for these the target
module is named with its parent (``mlp.c_proj``) so PEFT wraps the MLP projection only."""


class PeftExportError(ValueError):
    """The deltas cannot be written as the adapter asked for; the message says what to do."""


@dataclass(frozen=True)
class LoraLayer:
    """One layer's ``lora_B @ lora_A`` (float64, unpadded) and how far it is from the deltas."""

    lora_b: torch.Tensor
    """(out, rank)"""
    lora_a: torch.Tensor
    """(rank, in)"""
    rel_error: float
    """‖ΔW − B A‖_F / ‖ΔW‖_F in exact arithmetic (0 when nothing was truncated)."""

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])


@dataclass(frozen=True)
class PeftAdapter:
    """What :func:`export_peft_adapter` wrote."""

    path: Path
    r: int
    """The adapter's rank (padded to a vLLM rank): ``--max-lora-rank`` must be at least this."""
    ranks: dict[int, int]
    """Per layer, the rank before padding."""
    rel_errors: dict[int, float]
    tol: float
    target_module: str
    base_model_name_or_path: str

    @property
    def layers(self) -> list[int]:
        return sorted(self.ranks)

    def summary(self) -> dict[str, Any]:
        """JSON-able description (for markers and CLI output)."""
        return {
            "format": "peft",
            "r": self.r,
            "lora_alpha": self.r,
            "layers": self.layers,
            "ranks": {str(k): v for k, v in sorted(self.ranks.items())},
            "max_rel_error": max(self.rel_errors.values(), default=0.0),
            "tol": self.tol,
            "target_modules": [self.target_module],
            "base_model_name_or_path": self.base_model_name_or_path,
        }


# -- factors ------------------------------------------------------------------------------------
def _parts(update: LayerUpdate) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(left, right, ‖dropped‖_F)`` in float64; a dense update is factored by an SVD that
    keeps its numerical rank at float32 precision (the rest is float32 rounding noise)."""
    if update.right is not None:
        return update.left.double(), update.right.double(), 0.0
    u, s, vh = torch.linalg.svd(update.left.double(), full_matrices=False)
    k = _float32_rank(s, update.shape)
    return u[:, :k] * s[:k], vh[:k], float(s[k:].norm())


def _drop_zero_components(left: torch.Tensor, right: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove rank-one terms whose left column or right row is exactly zero (they add nothing)."""
    keep = (left != 0).any(dim=0) & (right != 0).any(dim=1)
    return left[:, keep], right[keep]


def _balance(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale each rank-one term so its B column and A row have equal norms.

    The product is unchanged; the edit's factors can differ in scale by orders of magnitude,
    and balanced factors keep both within range when cast to bf16/fp16.
    """
    if left.shape[1] == 0:
        return left, right
    scale = torch.sqrt(right.norm(dim=1) / left.norm(dim=0))
    return left * scale, right / scale[:, None]


def _core_svd(left: torch.Tensor, right: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of ``left @ right`` as ``(q_left, u, s, vh, q_right)``, taken of a small core (QR of
    both factors), never of the dense matrix."""
    q_left, r_left = torch.linalg.qr(left)
    q_right, r_right = torch.linalg.qr(right.T)
    u, s, vh = torch.linalg.svd(r_left @ r_right.T, full_matrices=False)
    return q_left, u, s, vh, q_right


def _leading(svd: tuple[torch.Tensor, ...], k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(B, A, ‖dropped‖_F)`` keeping the ``k`` leading directions, √s on each side."""
    q_left, u, s, vh, q_right = svd
    root = torch.sqrt(s[:k])
    return q_left @ (u[:, :k] * root), (root[:, None] * vh[:k]) @ q_right.T, float(s[k:].norm())


def _truncated(left: torch.Tensor, right: torch.Tensor, tol: float) -> LoraLayer:
    """Fewest directions of ``left @ right`` with relative Frobenius error at most ``tol``."""
    svd = _core_svd(left, right)
    s = svd[2]
    tail = torch.flip(torch.cumsum(torch.flip(s**2, [0]), 0), [0])  # tail[k] = Σ_{i≥k} s_i²
    fits = torch.nonzero(torch.cat([tail, tail.new_zeros(1)]) <= (tol**2) * float(tail[0]))
    lora_b, lora_a, dropped = _leading(svd, int(fits[0]))
    return LoraLayer(lora_b, lora_a, _relative(dropped, s))


def _numerical(left: torch.Tensor, right: torch.Tensor, shape: tuple[int, int]) -> LoraLayer:
    """``left @ right`` at its numerical rank at float32 precision (never above min(shape)):
    for chains whose factors together hold more directions than the matrix can have."""
    svd = _core_svd(left, right)
    s = svd[2]
    lora_b, lora_a, dropped = _leading(svd, _float32_rank(s, shape))
    return LoraLayer(lora_b, lora_a, _relative(dropped, s))


def _float32_rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    """How many of the (descending) singular values ``s`` stand above float32 rounding."""
    if s.numel() == 0 or s[0] == 0:
        return 0
    return int((s > s[0] * max(shape) * torch.finfo(torch.float32).eps).sum())


def _relative(dropped: float, s: torch.Tensor) -> float:
    total = float(s.norm())
    return dropped / total if total > 0 else 0.0


def layer_factors(updates: Sequence[LayerUpdate], tol: float = 0.0) -> LoraLayer:
    """The LoRA factors of the sum of ``updates`` (one layer's updates along a chain).

    ``tol == 0``: exact (factors concatenated, exact zeros dropped, dense parts, and chains
    holding more directions than ``min(out, in)``, at their float32 numerical rank).
    ``tol > 0``: truncated SVD with relative Frobenius error ≤ tol.
    """
    parts = [_parts(u) for u in updates]
    left = torch.cat([p[0] for p in parts], dim=1)
    right = torch.cat([p[1] for p in parts], dim=0)
    left, right = _drop_zero_components(left, right)
    dropped = sum(p[2] for p in parts)  # a bound on ‖what the dense SVDs left out‖_F
    shape = (left.shape[0], right.shape[1])
    if left.shape[1] == 0:
        return LoraLayer(left, right, 0.0)
    if tol > 0:
        factors = _truncated(left, right, tol)
    elif left.shape[1] > min(shape):
        factors = _numerical(left, right, shape)
    else:
        factors = LoraLayer(*_balance(left, right), 0.0)
    if dropped > 0:  # what the dense parts' SVDs left out, against the whole change
        norm = float(torch.linalg.matrix_norm(factors.lora_b @ factors.lora_a))
        factors = LoraLayer(factors.lora_b, factors.lora_a,
                            factors.rel_error + dropped / max(norm, dropped))
    return factors


def lora_layers(deltas: Sequence[WeightDelta], tol: float = 0.0) -> dict[int, LoraLayer]:
    """Per edited layer, the factors of the chain's total change (see :func:`layer_factors`)."""
    layers = sorted({layer for delta in deltas for layer in delta.layers})
    return {
        layer: layer_factors([d.updates[layer] for d in deltas if layer in d.updates], tol)
        for layer in layers
    }


def vllm_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank``; :class:`PeftExportError` above 512."""
    for allowed in VLLM_RANKS:
        if rank <= allowed:
            return allowed
    raise PeftExportError(
        f"the adapter needs rank {rank}, above vLLM's largest LoRA rank {VLLM_RANKS[-1]}: "
        "pass a (larger) tolerance tol, the relative error allowed per layer (edits compress "
        "little, so this costs accuracy), or export the merged checkpoint (format hf)"
    )


# -- files -------------------------------------------------------------------------------------
def target_module(spec: ArchSpec) -> str:
    """The ``target_modules`` entry that matches the MLP output projection and nothing else."""
    leaf = spec.mlp_out.rsplit(".", 1)[-1]
    return spec.mlp_out if leaf in _LEAVES_SHARED_WITH_ATTENTION else leaf


def adapter_config(spec: ArchSpec, r: int, layers: Sequence[int], base_name: str) -> Any:
    """The ``peft.LoraConfig`` of a plain LoRA (no bias, no dropout, scaling 1).

    Built by PEFT itself, so ``save_pretrained`` writes every field the installed PEFT expects
    and ``AutoPeftModelForCausalLM`` finds the base through ``base_model_name_or_path``.
    """
    from peft import LoraConfig  # imported here: loading PEFT costs a second the API need not pay

    return LoraConfig(
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_name,
        r=r,
        lora_alpha=r,
        lora_dropout=0.0,
        target_modules=[target_module(spec)],
        layers_to_transform=list(layers),
        fan_in_fan_out=spec.transposed,
        bias="none",
        inference_mode=True,
    )


def _padded(tensor: torch.Tensor, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    out = torch.zeros(rows, cols, dtype=dtype)
    out[: tensor.shape[0], : tensor.shape[1]] = tensor.to(dtype)
    return out


def adapter_tensors(layers: dict[int, LoraLayer], r: int, spec: ArchSpec,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The safetensors content, keyed as ``get_peft_model_state_dict`` names it."""
    tensors: dict[str, torch.Tensor] = {}
    for layer, factors in sorted(layers.items()):
        name = f"{_PREFIX}.{spec.blocks}.{layer}.{spec.mlp_out}"
        d_out, d_in = factors.lora_b.shape[0], factors.lora_a.shape[1]
        tensors[f"{name}.lora_A.weight"] = _padded(factors.lora_a, r, d_in, dtype)
        tensors[f"{name}.lora_B.weight"] = _padded(factors.lora_b, d_out, r, dtype)
    return tensors


def _check(deltas: Sequence[WeightDelta], config: Any, model: nn.Module | None,
           tol: float, dtype: torch.dtype) -> None:
    if not deltas:
        raise PeftExportError("no deltas: the base version has nothing to export as an adapter")
    if not (math.isfinite(tol) and 0 <= tol < 1):
        raise PeftExportError(f"tol must be in [0, 1) (a relative error), got {tol}")
    if not dtype.is_floating_point:
        raise PeftExportError(f"dtype must be a floating point type, got {dtype}")
    shapes: dict[int, tuple[int, int]] = {}
    for index, delta in enumerate(deltas):
        if delta.model_type and delta.model_type != config.model_type:
            raise PeftExportError(f"delta {index} is for model_type {delta.model_type!r}, "
                                  f"the base model is {config.model_type!r}")
        if model is not None:
            delta.check_compatible(model)
        for layer, update in delta.updates.items():
            if not 0 <= layer < config.num_hidden_layers:
                raise PeftExportError(f"delta {index} edits layer {layer}; the base model has "
                                      f"{config.num_hidden_layers} layers")
            if shapes.setdefault(layer, update.shape) != update.shape:
                raise PeftExportError(f"delta {index}, layer {layer}: shape {update.shape} "
                                      f"differs from {shapes[layer]} earlier in the chain")


def export_peft_adapter(
    deltas: Sequence[WeightDelta],
    base: Any,
    out_dir: str | os.PathLike[str],
    *,
    base_model_name: str | None = None,
    tol: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> PeftAdapter:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for a version's chain.

    ``deltas`` is the chain in order (base first); ``base`` the base model (the deltas are
    checked against it) or just its transformers config; ``base_model_name`` (the adapter's
    ``base_model_name_or_path``: where the weights the deltas were computed on can be loaded
    from) defaults to the config's ``name_or_path``. ``dtype`` is that of the written factors (float32, or the
    base model's). Raises :class:`PeftExportError` (a ``ValueError``) for an empty chain, a bad
    ``tol``, deltas of another architecture or shape, or a rank above 512 (pass ``tol`` or
    export the merged checkpoint); ``DeltaError`` when a delta does not fit the given model.
    """
    model = base if isinstance(base, nn.Module) else None
    config = base.config if model is not None else base
    _check(deltas, config, model, tol, dtype)
    spec = spec_for(config.model_type)
    layers = lora_layers(deltas, tol)
    r = vllm_rank(max(f.rank for f in layers.values()))
    name = base_model_name if base_model_name is not None else str(config.name_or_path or "")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = adapter_tensors(layers, r, spec, dtype)
    atomic_write(out / WEIGHTS_NAME, st_save(tensors, metadata={"format": "pt"}))
    adapter_config(spec, r, sorted(layers), name).save_pretrained(str(out))
    return PeftAdapter(
        path=out,
        r=r,
        ranks={layer: f.rank for layer, f in layers.items()},
        rel_errors={layer: f.rel_error for layer, f in layers.items()},
        tol=tol,
        target_module=target_module(spec),
        base_model_name_or_path=name,
    )
