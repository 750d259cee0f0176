"""Which records and facts carry the KL: the tail summary and the fact × record matrix."""

from __future__ import annotations

import pytest
import torch

from bench.kl_records import kl_by_fact_and_record, pair_summary, tail_summary
from bench.kl_sources import kl_own_and_others
from editing import EditRequest
from editing.evaluate.data import Record
from tests.unit.test_bench_kl_sources import PROMPTS, _factored_delta


def test_tail_summary_says_how_much_the_largest_records_carry() -> None:
    summary = tail_summary([0.0, 1.0, 1.0, 2.0, 16.0])
    assert summary["mean"] == pytest.approx(4.0)
    assert summary["median"] == pytest.approx(1.0)
    assert summary["mean_without_top1"] == pytest.approx(1.0)
    assert summary["top1_share"] == pytest.approx(0.8)
    assert summary["mean_without_top3"] == pytest.approx(0.5)
    assert "top10_share" not in summary, "no top-10 figure from five records"


def _records() -> list[Record]:
    return [Record(0, EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English", "French",
                                  neighborhood_prompts=(PROMPTS[0], PROMPTS[2]))),
            Record(1, EditRequest("Toko Yasuda", "{} plays the", "guitar", "piano",
                                  neighborhood_prompts=(PROMPTS[1],))),
            Record(2, EditRequest("Léon Blum", "The mother tongue of {} is", "German", "French",
                                  neighborhood_prompts=(PROMPTS[2], PROMPTS[1])))]


def test_each_fact_alone_on_each_record(tiny) -> None:
    """Fact 1 writes nothing, so its column is zero; the diagonal is each record's own-fact KL,
    whose mean over the neighbourhood prompts is what --own reports (prompt-weighted)."""
    model, tok = tiny
    records = _records()
    delta = _factored_delta(model, (1, 2), n_facts=3, silent=1)
    pairs = kl_by_fact_and_record(model, tok, records, delta)
    assert pairs.shape == (3, 3)
    assert torch.all(pairs[:, 1] == 0)
    assert torch.all(pairs[:, [0, 2]] > 1e-6)
    counts = torch.tensor([len(r.request.neighborhood_prompts) for r in records], dtype=torch.float64)
    own = float((pairs.diag() * counts).sum() / counts.sum())
    assert own == pytest.approx(kl_own_and_others(model, tok, records, delta)["own fact"], rel=1e-4)


def test_pair_summary_finds_the_facts_that_share_a_true_object() -> None:
    """Records 0 and 2 share the true object (French): their mutual leaks are that share."""
    records = _records()
    pairs = torch.tensor([[0.1, 0.0, 0.6], [0.1, 0.2, 0.1], [0.2, 0.0, 0.3]], dtype=torch.float64)
    summary = pair_summary(pairs, records, top=2)
    assert summary["own_mean"] == pytest.approx(0.2)
    assert summary["others_sum_mean"] == pytest.approx((0.6 + 0.2 + 0.2) / 3)
    assert summary["same_true_object_pairs"] == 2
    assert summary["same_true_object_share"] == pytest.approx(0.8 / 1.0)
    assert [row["fact"] for row in summary["leaking_most"]] == [2, 0]
