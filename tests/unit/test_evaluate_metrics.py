"""Metric arithmetic on hand-built logits whose answers are known in advance."""

from __future__ import annotations

import math

import pytest
import torch

from editing.evaluate.counterfact import counterfact_metrics
from editing.evaluate.data import Record
from editing.evaluate.metrics import (
    aggregate,
    all_tokens_hit,
    kl_divergence,
    mean_nll,
    percent,
    prefers,
    target_argmax,
    target_logprobs,
    token_accuracy,
    topk_overlap,
)
from editing.evaluate.scoring import RowScore, ScoreRow
from editing.evaluate.zsre import zsre_metrics
from editing.requests import EditRequest


def logits_from_probs(*rows: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly the given probabilities."""
    return torch.tensor(rows, dtype=torch.float64).log()


def test_target_logprobs_reads_the_position_before_each_target_token() -> None:
    # sequence: p0 p1 | t0 t1 ; logits at position 1 predict t0, at position 2 predict t1
    logits = logits_from_probs(
        [0.25, 0.25, 0.25, 0.25],  # position 0: never read (it predicts p1)
        [0.1, 0.2, 0.3, 0.4],  # position 1 -> t0 = token 2: 0.3
        [0.7, 0.1, 0.1, 0.1],  # position 2 -> t1 = token 0: 0.7
        [0.25, 0.25, 0.25, 0.25],  # position 3: past the target
    )
    lp = target_logprobs(logits, torch.tensor([2, 0]), prompt_len=2)
    assert torch.allclose(lp, torch.tensor([math.log(0.3), math.log(0.7)], dtype=lp.dtype))
    assert mean_nll(lp) == pytest.approx(-(math.log(0.3) + math.log(0.7)) / 2)
    assert target_argmax(logits, 2, prompt_len=2).tolist() == [3, 0]


def test_target_logprobs_rejects_a_short_sequence_and_an_empty_prompt() -> None:
    logits = torch.zeros(3, 5)
    with pytest.raises(ValueError):
        target_logprobs(logits, torch.tensor([1, 2, 3]), prompt_len=2)
    with pytest.raises(ValueError):
        target_logprobs(logits, torch.tensor([1]), prompt_len=0)


def test_success_is_a_strict_per_token_nll_comparison() -> None:
    assert prefers(0.5, 1.0)
    assert not prefers(1.0, 0.5)
    assert not prefers(0.7, 0.7)  # a tie is not a success for either side
    # length-normalised: a 2-token target at 0.6 per token beats a 1-token one at 0.9
    two = torch.tensor([math.log(0.6), math.log(0.6)])
    one = torch.tensor([math.log(0.5)])
    assert prefers(mean_nll(two), mean_nll(one))


def test_accuracy_needs_every_token_and_token_accuracy_counts_them() -> None:
    target = torch.tensor([5, 6, 7])
    assert all_tokens_hit(torch.tensor([5, 6, 7]), target)
    assert not all_tokens_hit(torch.tensor([5, 6, 8]), target)
    assert token_accuracy(torch.tensor([5, 6, 8]), target) == pytest.approx(2 / 3)
    assert token_accuracy(torch.tensor([0, 0, 0]), target) == 0.0


def test_kl_of_identical_distributions_is_zero() -> None:
    p = torch.randn(3, 50).log_softmax(-1)
    assert torch.allclose(kl_divergence(p, p.clone()), torch.zeros(3, dtype=torch.float64))


def test_kl_of_a_known_pair_and_its_direction() -> None:
    base = torch.tensor([[0.5, 0.5]]).log()
    edited = torch.tensor([[0.25, 0.75]]).log()
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(base ‖ edited)
    reverse = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(kl_divergence(base, edited)) == pytest.approx(expected, abs=1e-7)
    assert float(kl_divergence(edited, base)) == pytest.approx(reverse, abs=1e-7)
    assert expected != pytest.approx(reverse)


def test_topk_overlap_on_constructed_rankings() -> None:
    base = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    edited = torch.tensor([[5.0, 3.0, 4.0, 1.0, 2.0], [1.0, 5.0, 4.0, 3.0, 2.0]])
    # row 0: base top order 0,1,2,3,4 ; edited 0,2,1,4,3
    # row 1: base 0,1,2,3,4 ; edited 1,2,3,4,0
    assert topk_overlap(base, edited, 1).tolist() == [1.0, 0.0]
    assert topk_overlap(base, edited, 2).tolist() == [0.5, 0.5]  # {0,1}v{0,2}; {0,1}v{1,2}
    assert topk_overlap(base, edited, 3).tolist() == [1.0, 2 / 3]
    assert topk_overlap(base, edited, 5).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        topk_overlap(base, edited, 6)


def test_percent_and_aggregate_skip_undefined_records() -> None:
    assert percent([1.0, 0.0, None, 1.0]) == pytest.approx(200 / 3)
    assert percent([None]) is None
    out = aggregate([{"kl": 0.2, "top1": 1.0}, {"kl": 0.4, "top1": 0.5}], ["kl", "top1"])
    assert out["kl"] == pytest.approx(0.3)  # nats, not a percentage
    assert out["top1"] == pytest.approx(75.0)


# -- per-record wiring on hand-made scores ------------------------------------------------


def score(
    nll: float, argmax: list[int], target: list[int], nxt: list[float] | None = None
) -> RowScore:
    n = len(target)
    return RowScore(
        target_ids=torch.tensor(target),
        logprobs=torch.full((n,), -nll),
        argmax=torch.tensor(argmax),
        next_logprobs=None if nxt is None else torch.tensor(nxt).log(),
    )


def test_counterfact_record_metrics_compare_the_right_targets() -> None:
    req = EditRequest("S", "{} speaks", "English", "French", ("P1", "P2"), ("N1", "N2", "N3"))
    new_ids, true_ids = [7], [8]
    same = [0.7, 0.2, 0.1]
    edited = {
        ScoreRow("S speaks", "English"): score(0.1, [7], new_ids),  # new wins, is the argmax
        ScoreRow("S speaks", "French"): score(2.0, [7], true_ids),
        ScoreRow("P1", "English"): score(0.5, [7], new_ids),  # new wins, argmax
        ScoreRow("P1", "French"): score(1.0, [7], true_ids),
        ScoreRow("P2", "English"): score(3.0, [8], new_ids),  # true wins, not argmax
        ScoreRow("P2", "French"): score(1.0, [8], true_ids),
        ScoreRow("N1", "English"): score(3.0, [8], new_ids),  # neighborhood kept: true wins
        ScoreRow("N1", "French"): score(0.2, [8], true_ids, nxt=same),
        ScoreRow("N2", "English"): score(0.1, [7], new_ids),  # neighborhood broken: new wins
        ScoreRow("N2", "French"): score(0.9, [7], true_ids, nxt=[0.1, 0.2, 0.7]),
        ScoreRow("N3", "English"): score(1.5, [8], new_ids),  # kept: true wins
        ScoreRow("N3", "French"): score(1.0, [8], true_ids, nxt=same),
    }
    base = {
        ScoreRow(n, "French"): score(0.2, [8], true_ids, nxt=same) for n in ("N1", "N2", "N3")
    }
    m = counterfact_metrics(req, edited, base)
    assert m["efficacy_success"] == 1.0 and m["efficacy_accuracy"] == 1.0
    assert m["generalization_success"] == 0.5 and m["generalization_accuracy"] == 0.5
    assert m["specificity_success"] == pytest.approx(2 / 3)  # P(true) > P(new) on N1, N3
    kl_n2 = sum(p * math.log(p / q) for p, q in zip(same, [0.1, 0.2, 0.7], strict=True))
    assert m["kl"] == pytest.approx(kl_n2 / 3, rel=1e-5)
    assert m["top1"] == pytest.approx(2 / 3)  # N1, N3 unchanged; N2's top token moved
    assert m["top5"] == 1.0  # k clipped to the 3-token vocabulary: same token set


def test_zsre_record_metrics_compare_neighborhood_with_the_unedited_argmax() -> None:
    req = EditRequest("S", "Where is {}?", "Rome Italy", None, ("Where lies S?",), ("nq: q?",))
    case = Record(0, req, ("Paris France",))
    nxt = [0.5, 0.5]
    edited = {
        ScoreRow("Where is S?", "Rome Italy"): score(0.1, [3, 9], [3, 4]),  # 1 of 2 tokens
        ScoreRow("Where lies S?", "Rome Italy"): score(0.1, [3, 4], [3, 4]),  # 2 of 2
        ScoreRow("nq: q?", "Paris France"): score(0.1, [5, 1], [5, 6], nxt=nxt),
    }
    base = {ScoreRow("nq: q?", "Paris France"): score(0.1, [2, 1], [5, 6], nxt=nxt)}
    m = zsre_metrics(case, edited, base)
    assert m["zsre_efficacy"] == 0.5 and m["efficacy_accuracy"] == 0.0
    assert m["zsre_generalization"] == 1.0 and m["generalization_accuracy"] == 1.0
    assert m["zsre_specificity"] == 0.5  # edited [5,1] vs unedited [2,1]
    assert m["zsre_specificity_gold"] == 0.5  # edited [5,1] vs answer [5,6]
    assert m["efficacy_success"] is None and m["kl"] == pytest.approx(0.0)
