"""Per-architecture module names, so editing code never hard-codes one model family.

An edit rewrites the MLP output matrix of a transformer block. Where that matrix lives, and
whether it is stored (out, in) like ``nn.Linear`` or (in, out) like GPT-2's ``Conv1D``, differs
between families; this registry, keyed by ``config.model_type``, is the single place that knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """Where the editable parts of one model family live (dotted attribute paths)."""

    blocks: str
    """The ``nn.ModuleList`` of transformer blocks, from the model root."""
    mlp_out: str
    """The MLP output projection, relative to one block (its input is the edit *key*)."""
    final_norm: str
    """The final norm before the unembedding, from the model root."""
    lm_head: str
    """The unembedding, from the model root."""
    transposed: bool = False
    """True when the weight is stored (in, out), as in GPT-2's ``Conv1D``."""


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("model.layers", "mlp.down_proj", "model.norm", "lm_head"),
    "mistral": ArchSpec("model.layers", "mlp.down_proj", "model.norm", "lm_head"),
    "qwen2": ArchSpec("model.layers", "mlp.down_proj", "model.norm", "lm_head"),
    "qwen3": ArchSpec("model.layers", "mlp.down_proj", "model.norm", "lm_head"),
    "gpt2": ArchSpec("transformer.h", "mlp.c_proj", "transformer.ln_f", "lm_head", transposed=True),
    "gptj": ArchSpec("transformer.h", "mlp.fc_out", "transformer.ln_f", "lm_head"),
    "gpt_neox": ArchSpec("gpt_neox.layers", "mlp.dense_4h_to_h", "gpt_neox.final_layer_norm", "embed_out"),
}


class UnsupportedArchitecture(ValueError):
    """The model family is not in the registry; the message lists the ones that are."""


def spec_for(model_or_type: nn.Module | str) -> ArchSpec:
    """The spec for a model (or a ``config.model_type`` string)."""
    model_type = model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} has no architecture spec; supported: {known}. "
            "Add an ArchSpec to models.specs.ARCHITECTURES."
        ) from None


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule`` that also accepts an empty path."""
    return root.get_submodule(path) if path else root


def blocks(model: nn.Module, spec: ArchSpec | None = None) -> nn.ModuleList:
    spec = spec or spec_for(model)
    return get_submodule(model, spec.blocks)  # type: ignore[return-value]


def num_layers(model: nn.Module) -> int:
    return len(blocks(model))


def block(model: nn.Module, layer: int, spec: ArchSpec | None = None) -> nn.Module:
    return blocks(model, spec)[layer]


def mlp_out(model: nn.Module, layer: int, spec: ArchSpec | None = None) -> nn.Module:
    spec = spec or spec_for(model)
    return get_submodule(block(model, layer, spec), spec.mlp_out)


def mlp_out_weight(model: nn.Module, layer: int) -> torch.nn.Parameter:
    """The stored weight parameter, in its native orientation."""
    return mlp_out(model, layer).weight


def weight_out_in(model: nn.Module, layer: int) -> torch.Tensor:
    """The MLP output weight as an (out, in) view, whatever the storage orientation."""
    w = mlp_out_weight(model, layer)
    return w.T if spec_for(model).transposed else w


def key_dim(model: nn.Module, layer: int) -> int:
    """Size of the key (the MLP hidden width feeding the output matrix)."""
    return weight_out_in(model, layer).shape[1]
