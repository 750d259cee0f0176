"""The z loop runs the blocks below the z layer once: the same z, bit for bit, for less work."""

from __future__ import annotations

import contextlib

import pytest
import torch

from bench.tiny import tiny_model
from editing.forward.hooks import reuse_lower_blocks
from editing.targets import z as zmod
from editing.targets.z import optimize_z
from models.specs import block
from tests.conftest import FACTS, TINY_HPARAMS

PREFIXES = ["", "Because I. ", "The a. "]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_later_passes_skip_the_lower_blocks_and_give_the_same_output(arch: str) -> None:
    model = tiny_model(arch, layers=4)
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    memo: dict = {}
    with torch.no_grad():
        with reuse_lower_blocks(model, 2, memo):
            first = model(ids).logits
        with reuse_lower_blocks(model, 2, memo):
            for p in block(model, 0).parameters():  # a skipped block's weights cannot matter
                p.add_(1.0)
            again = model(ids).logits
        after = model(ids).logits  # outside the context block 0 runs again
    assert torch.equal(first, again)
    assert not torch.allclose(first, after)
    assert "forward" not in block(model, 0).__dict__ and "forward" not in block(model, 1).__dict__


def test_z_is_bit_identical_with_and_without_reuse(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = tiny
    hp = TINY_HPARAMS.replace(z_steps=8)
    reused = optimize_z(model, tok, FACTS, PREFIXES, 2, hp)
    monkeypatch.setattr(zmod, "reuse_lower_blocks", lambda *_a, **_k: contextlib.nullcontext())
    full = optimize_z(model, tok, FACTS, PREFIXES, 2, hp)
    assert torch.equal(reused.offset, full.offset)
    assert reused.steps == full.steps and reused.nll == full.nll
