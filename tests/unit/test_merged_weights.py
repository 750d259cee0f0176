"""The merged-weights digest computed beside a model equals the digest of the merged model."""

from __future__ import annotations

import pytest
import torch

from bench.tiny import tiny_model
from editing import (
    LayerUpdate,
    WeightDelta,
    merged_weights,
    merged_weights_digest,
    weights_digest,
)
from models.specs import weight_out_in


def _delta(model: torch.nn.Module, layers: tuple[int, ...], seed: int) -> WeightDelta:
    generator = torch.Generator().manual_seed(seed)
    updates = {}
    for layer in layers:
        d_out, d_in = weight_out_in(model, layer).shape
        left = torch.randn(d_out, 2, generator=generator) * 1e-3
        right = torch.randn(2, d_in, generator=generator)
        updates[layer] = LayerUpdate.from_factors(left, right)
    return WeightDelta(updates, model_type=model.config.model_type)


@pytest.mark.parametrize(("arch", "dtype"), [("llama", torch.float32), ("gpt2", torch.float32),
                                             ("llama", torch.bfloat16)])
def test_digest_beside_the_model_equals_the_digest_after_applying(arch: str,
                                                                  dtype: torch.dtype) -> None:
    model = tiny_model(arch).to(dtype)
    chain = [_delta(model, (1, 2), seed=0), _delta(model, (2, 3), seed=1)]
    base = weights_digest(model)

    beside = merged_weights_digest(model, chain)
    assert weights_digest(model) == base  # the model was only read
    assert sorted(merged_weights(model, chain)) == [1, 2, 3]

    for delta in chain:
        delta.apply(model)
    assert weights_digest(model) == beside != base


def test_an_empty_chain_is_the_model_itself() -> None:
    model = tiny_model()
    assert merged_weights_digest(model, []) == weights_digest(model)
