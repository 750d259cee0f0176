"""Batched scoring equals one-row-at-a-time scoring; the delta is applied and reverted exactly."""

from __future__ import annotations

import pytest
import torch

from bench.tiny import tiny_model, tiny_tokenizer
from editing.evaluate.counterfact import evaluate_counterfact
from editing.evaluate.data import Record
from editing.evaluate.scoring import ScoreRow, encode_row, score_rows, with_delta
from editing.evaluate.zsre import evaluate_zsre
from editing.requests import EditRequest
from editing.weights.delta import LayerUpdate, WeightDelta
from models.specs import mlp_out_weight, weight_out_in

ROWS = [
    ScoreRow("The mother tongue of Danielle Darrieux is", "English"),
    ScoreRow("The mother tongue of Danielle Darrieux is", "French"),
    ScoreRow("The mother tongue of Danielle Darrieux is", "Illinois Institute of Technology"),
    ScoreRow("Paris is the capital of", "France"),
    ScoreRow("Paris is the capital of", "the French Republic"),
    ScoreRow("Toko Yasuda plays the", "guitar"),
    ScoreRow("What university did Watts Humphrey attend?", "Illinois Institute of Technology"),
    ScoreRow("Rome is in"),  # bare prompt: next-token distribution only
    ScoreRow("I"),
    ScoreRow("Paris is the"),  # a prefix of other rows' text: scored within their pass
    ScoreRow("Paris is", "the capital"),
]

CF = [
    EditRequest(
        "Danielle Darrieux", "The mother tongue of {} is", "English", "French",
        ("Danielle Darrieux, a native", "Danielle Darrieux spoke the language"),
        ("The native language of Montesquieu is", "Michel Rocard is a native speaker of"),
    ),
    EditRequest(
        "Toko Yasuda", "{} plays the", "piano", "guitar",
        ("Toko Yasuda is known for playing the",),
        ("Apple A5 was created by", "Paris is the capital of"),
    ),
]


def reference(model: torch.nn.Module, tok, row: ScoreRow) -> tuple:
    """One unpadded full forward per row: (target log-probs, argmax, next-token log-probs)."""
    head, tail = encode_row(tok, row)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([head + tail])).logits[0].float()
    logp = logits.log_softmax(-1)
    positions = [len(head) - 1 + j for j in range(len(tail))]
    lp = torch.stack([logp[p, t] for p, t in zip(positions, tail, strict=True)]) if tail else None
    argmax = logits[positions].argmax(-1) if tail else None
    return lp, argmax, logp[len(head) - 1]


@pytest.mark.parametrize(("arch", "style"), [("llama", "bos"), ("gpt2", "bpe"), ("llama", "bpe")])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_scores_equal_unbatched(arch: str, style: str, batch_size: int) -> None:
    tok = tiny_tokenizer(style)
    model = tiny_model(arch, vocab_size=len(tok))
    scores = score_rows(model, tok, ROWS + ROWS[:2], batch_size, next_for=ROWS[:4])
    assert set(scores) == set(ROWS)
    for row in ROWS:
        lp, argmax, nxt = reference(model, tok, row)
        got = scores[row]
        if row.target is not None:
            assert torch.allclose(got.logprobs, lp, atol=1e-5), row
            assert torch.equal(got.argmax, argmax), row
            assert got.target_ids.tolist() == encode_row(tok, row)[1]
        if row in ROWS[:4] or row.target is None:
            assert got.next_logprobs is not None
            assert torch.allclose(got.next_logprobs, nxt, atol=1e-5), row
        else:
            assert got.next_logprobs is None


def random_delta(model: torch.nn.Module, layers: tuple[int, ...], scale: float) -> WeightDelta:
    gen = torch.Generator().manual_seed(1)
    updates = {
        layer: LayerUpdate(torch.randn(weight_out_in(model, layer).shape, generator=gen) * scale)
        for layer in layers
    }
    return WeightDelta(updates=updates, model_type=model.config.model_type)


def test_with_delta_restores_the_weights_bit_identically_even_on_error() -> None:
    model = tiny_model("gpt2")
    before = mlp_out_weight(model, 1).clone()
    delta = random_delta(model, (1,), 0.5)
    with pytest.raises(RuntimeError), with_delta(model, delta):
        assert not torch.equal(mlp_out_weight(model, 1), before)
        raise RuntimeError("boom")
    assert torch.equal(mlp_out_weight(model, 1), before)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_counterfact_with_a_delta_matches_the_edited_model_and_leaves_it_as_found(
    arch: str,
) -> None:
    tok = tiny_tokenizer("bos" if arch == "llama" else "bpe")
    model = tiny_model(arch, vocab_size=len(tok))
    delta = random_delta(model, (1, 2), 2.0)
    weights = {n: p.clone() for n, p in model.named_parameters()}

    two_sided = evaluate_counterfact(model, tok, CF, delta, batch_size=4, per_record=True)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert two_sided["kl"] > 1e-4  # a large random delta moves the neighborhood
    assert two_sided["counts"]["neighborhood_prompts"] == 4

    base = delta.apply(model)  # the same numbers from the edited model scored on its own
    try:
        alone = evaluate_counterfact(model, tok, CF, None, batch_size=7)
    finally:
        WeightDelta.revert(model, base)
    for key in ("efficacy_success", "efficacy_accuracy", "generalization_success",
                "generalization_accuracy", "specificity_success"):
        assert two_sided[key] == pytest.approx(alone[key]), key
    assert alone["kl"] == 0.0 and alone["top1"] == alone["top10"] == 100.0


def test_a_zero_delta_changes_nothing() -> None:
    tok = tiny_tokenizer("bos")
    model = tiny_model("llama", vocab_size=len(tok))
    zero = random_delta(model, (1,), 0.0)
    plain = evaluate_counterfact(model, tok, CF, None, batch_size=5)
    zeroed = evaluate_counterfact(model, tok, CF, zero, batch_size=5)
    assert zeroed["kl"] == pytest.approx(0.0, abs=1e-6)
    for key in ("top1", "top5", "top10"):
        assert zeroed[key] == 100.0
    for key in ("efficacy_success", "generalization_success", "specificity_success"):
        assert zeroed[key] == plain[key]


def test_zsre_specificity_is_relative_to_the_unedited_model() -> None:
    tok = tiny_tokenizer("bpe")
    model = tiny_model("gpt2", vocab_size=len(tok))
    case = Record(
        0,
        EditRequest("Watts Humphrey", "What university did {} attend?",
                    "Illinois Institute of Technology", None,
                    ("What university did Watts Humphrey take part in?",),
                    ("nq question: what is the capital of France?",)),
        ("Paris",),
    )
    unedited = evaluate_zsre(model, tok, [case], None)
    assert unedited["zsre_specificity"] == 100.0  # the model agrees with itself
    assert unedited["efficacy_success"] is None
    edited = evaluate_zsre(model, tok, [case], random_delta(model, (0, 1, 2, 3), 5.0))
    assert edited["kl"] > 0
    assert 0.0 <= edited["zsre_specificity"] <= 100.0


@pytest.mark.parametrize(("arch", "style"), [("llama", "bos"), ("gpt2", "bpe")])
def test_rows_sharing_a_long_head_score_as_unbatched(arch: str, style: str) -> None:
    from editing.evaluate.scoring import MIN_SHARED_HEAD
    from editing.forward.chat import chat_prompt

    tok = tiny_tokenizer(style)
    model = tiny_model(arch, vocab_size=len(tok))
    system = "The mother tongue of Danielle Darrieux is French. Paris is the capital of France."
    chats = [chat_prompt(tok, q, system) for q in ("What is Paris?", "Who plays the guitar?", "I")]
    rows = [ScoreRow(chats[0], "France", ""), ScoreRow(chats[1], "Toko Yasuda", ""), ScoreRow(chats[2])]
    assert len(encode_row(tok, rows[2])[0]) > MIN_SHARED_HEAD + 4
    scores = score_rows(model, tok, rows, batch_size=8, next_for=rows)
    for row in rows:
        lp, argmax, nxt = reference(model, tok, row)
        if row.target is not None:
            assert torch.allclose(scores[row].logprobs, lp, atol=1e-5), row
            assert torch.equal(scores[row].argmax, argmax), row
        assert torch.allclose(scores[row].next_logprobs, nxt, atol=1e-5), row
