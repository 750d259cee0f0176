"""z optimisation and forward-replay targets on tiny random models."""

from __future__ import annotations

import torch

from editing.forward.hooks import capture, edit_block_output
from editing.forward.logprob import target_logprobs
from editing.forward.tokens import continuation_ids, prompt_ids
from editing.targets.encoding import encode_requests
from editing.targets.z import optimize_z, replay_targets
from tests.conftest import FACTS, TINY_HPARAMS

PREFIXES = ["", "Because I. ", "The a. "]


def target_nll(model, tokenizer, request, layer: int, offset: torch.Tensor) -> float:
    """NLL of the target on the bare prompt with ``offset`` added at the fact token."""
    row = encode_requests(tokenizer, [request], [""])[0]
    ids = torch.tensor([row.ids + row.target[:-1]])

    def add(hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.clone()
        hidden[0, row.fact] += offset
        return hidden

    with edit_block_output(model, layer, add), torch.no_grad():
        logits = model(ids).logits[0]
    return -float(target_logprobs(logits, torch.tensor(row.target), len(row.ids)).mean())


def test_z_lowers_the_target_nll(tiny) -> None:
    model, tok = tiny
    hp = TINY_HPARAMS.replace(z_steps=20, kl_factor=0.0, weight_decay=0.0, clamp_norm_factor=10.0)
    result = optimize_z(model, tok, FACTS, PREFIXES, 1, hp)
    gains = []
    for i, request in enumerate(FACTS):
        before = target_nll(model, tok, request, 1, torch.zeros(model.config.hidden_size))
        after = target_nll(model, tok, request, 1, result.offset[i])
        assert after < before, (request.subject, before, after)
        gains.append(before - after)
    assert sum(gains) / len(gains) > 0.3, gains


def test_clamp_bounds_the_delta(tiny) -> None:
    model, tok = tiny
    hp = TINY_HPARAMS.replace(z_steps=10, z_lr=5.0, clamp_norm_factor=0.1)
    result = optimize_z(model, tok, FACTS, PREFIXES, 1, hp)
    assert torch.all(result.offset.norm(dim=-1) <= 0.1 * result.h.norm(dim=-1) * (1 + 1e-4))


def test_batched_z_equals_one_at_a_time(tiny) -> None:
    model, tok = tiny
    batched = optimize_z(model, tok, FACTS, PREFIXES, 1, TINY_HPARAMS)
    for i, request in enumerate(FACTS):
        single = optimize_z(model, tok, [request], PREFIXES, 1, TINY_HPARAMS)
        torch.testing.assert_close(batched.offset[i], single.offset[0], atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(batched.h[i], single.h[0], atol=1e-5, rtol=1e-5)
        assert batched.steps[i] == single.steps[0]


def test_prefix_cache_gives_the_same_z_with_fewer_tokens(tiny) -> None:
    model, tok = tiny
    cached = optimize_z(model, tok, FACTS, PREFIXES, 1, TINY_HPARAMS, prefix_cache=True)
    full = optimize_z(model, tok, FACTS, PREFIXES, 1, TINY_HPARAMS, prefix_cache=False)
    torch.testing.assert_close(cached.offset, full.offset, atol=1e-4, rtol=1e-3)
    assert cached.tokens_per_step < full.tokens_per_step


def test_early_stop_freezes_a_request() -> None:
    from bench.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer("bpe")
    model = tiny_model("gpt2", vocab_size=len(tok))
    hp = TINY_HPARAMS.replace(z_steps=30, nll_stop=1e9)  # everything is "already learned"
    result = optimize_z(model, tok, FACTS, PREFIXES, 1, hp)
    assert result.steps == [1, 1, 1]
    assert torch.count_nonzero(result.offset) == 0


def test_forward_replay_equals_manual_forward_with_z(tiny) -> None:
    model, tok = tiny
    zres = optimize_z(model, tok, FACTS, PREFIXES, 1, TINY_HPARAMS)
    targets = replay_targets(model, tok, FACTS, [""], zres, [2, 3])
    for i, request in enumerate(FACTS):
        row = encode_requests(tok, [request], [""], with_target=False)[0]
        ids = torch.tensor([prompt_ids(tok, request.text)])

        def put_z(hidden: torch.Tensor, i: int = i, fact: int = row.fact) -> torch.Tensor:
            hidden = hidden.clone()
            hidden[0, fact] = zres.z[i]
            return hidden

        with edit_block_output(model, 1, put_z), capture(model, (2, 3)) as seen, torch.no_grad():
            model(ids)
        for layer in (2, 3):
            torch.testing.assert_close(targets[layer][i], seen["block"][layer][0, row.fact], atol=1e-5, rtol=1e-4)
    for request in FACTS:  # z was optimised on the very target tokens scoring reads
        target = encode_requests(tok, [request], [""])[0].target
        assert target and target == continuation_ids(tok, request.text, request.target_new)
