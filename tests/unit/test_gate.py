"""The quality gate's figures, verdicts and thresholds, and the per-request strength, on
hand-built cases and the tiny model (known answers where one exists)."""

from __future__ import annotations

import pytest
import torch

from app.worker.gate import GateThresholds, judge, load_probes
from app.worker.strength import replay_weight, requested
from bench.tiny import tiny_model, tiny_tokenizer
from editing.evaluate.counterfact import evaluate_counterfact
from editing.evaluate.gate import measure
from editing.evaluate.scoring import with_delta
from editing.hparams import EditHparams, NullSpace
from editing.requests import EditRequest
from editing.strength import STRENGTHS, with_strength
from editing.weights.delta import WeightDelta
from models.specs import mlp_out_weight
from tests.unit.test_evaluate_scoring import CF, random_delta

PROBES = ("The weather today is", "Paris is the capital of", "I", "Rome is in")


def test_probes_are_many_distinct_plain_prompts() -> None:
    probes = load_probes()
    assert 40 <= len(probes) <= 60
    assert len(set(probes)) == len(probes)
    assert all(p == p.strip() and "{" not in p for p in probes)


def test_no_delta_change_means_no_drift_and_the_unedited_efficacy() -> None:
    model, tok = tiny_model(), tiny_tokenizer()
    zero = random_delta(model, (1,), scale=0.0)
    figures = measure(model, tok, CF, zero, PROBES)
    assert figures["kl"] == pytest.approx(0.0, abs=1e-12)
    assert figures["top1_agreement"] == 100.0
    assert figures["logprob_gain"] == pytest.approx(0.0, abs=1e-9)
    reference = evaluate_counterfact(model, tok, CF, None)
    assert figures["efficacy"] == reference["efficacy_success"]
    assert figures["generalization"] == reference["generalization_success"]
    assert (figures["facts"], figures["paraphrases"], figures["probes"]) == (2, 3, 4)


def test_a_delta_moves_the_probes_and_leaves_the_model_as_found() -> None:
    model, tok = tiny_model(), tiny_tokenizer()
    before = mlp_out_weight(model, 1).detach().clone()
    delta = random_delta(model, (1, 2), scale=0.5)
    figures = measure(model, tok, CF, delta, PROBES, batch_size=2)
    assert torch.equal(mlp_out_weight(model, 1), before)
    assert figures["kl"] > 0
    reference = evaluate_counterfact(model, tok, CF, delta)
    assert figures["efficacy"] == reference["efficacy_success"]


def test_without_target_true_efficacy_is_the_argmax() -> None:
    model, tok = tiny_model(), tiny_tokenizer()
    reqs = [EditRequest(r.subject, r.prompt, r.target_new) for r in CF]
    delta = random_delta(model, (1,), scale=0.3)
    figures = measure(model, tok, reqs, delta, PROBES)
    reference = evaluate_counterfact(model, tok, reqs, delta)
    assert figures["efficacy"] == reference["efficacy_accuracy"]
    assert figures["generalization"] is None  # no paraphrases were given


def test_judge_names_every_missed_threshold() -> None:
    figures = {"efficacy": 40.0, "kl": 0.25}
    assert judge(figures, GateThresholds()) == []
    assert judge(figures, GateThresholds(min_efficacy=40, max_kl=0.25)) == []
    assert judge(figures, GateThresholds(min_efficacy=90)) == ["efficacy 40% < 90% required"]
    assert judge(figures, GateThresholds(max_kl=0.1)) == ["probe KL 0.25 nats > 0.1 nats allowed"]
    assert len(judge(figures, GateThresholds(min_efficacy=50.5, max_kl=0))) == 2
    assert judge({"efficacy": 66.667, "kl": 0}, GateThresholds(min_efficacy=70)) == [
        "efficacy 66.7% < 70% required"
    ]


def test_request_thresholds_override_the_settings_one_by_one() -> None:
    settings = GateThresholds(min_efficacy=90, max_kl=0.1)
    assert settings.overridden(None) == settings
    assert settings.overridden({"max_kl": 1}) == GateThresholds(90, 1.0)
    assert settings.overridden({"min_efficacy": 0, "max_kl": None}) == GateThresholds(0.0, 0.1)
    assert not GateThresholds().enabled and GateThresholds(max_kl=0).enabled


def test_strength_scales_the_services_lambda() -> None:
    base = EditHparams(layers=(1, 2), covariance_weight=15000.0)
    assert with_strength(base) is base
    assert with_strength(base, "default") is base
    assert with_strength(base, "conservative").covariance_weight == 45000.0
    assert with_strength(base, "strong").covariance_weight == pytest.approx(5000.0)
    assert with_strength(base, None, 2e5).covariance_weight == 2e5
    assert with_strength(base, "strong").layers == base.layers
    # the null-space methods' strength is μ: a named strength scales it the same way
    assert with_strength(base.replace(nullspace=NullSpace(l2=30.0)), "conservative").nullspace.l2 == 90.0
    with pytest.raises(ValueError, match="strength"):
        with_strength(base, "extreme")
    assert set(STRENGTHS) == {"conservative", "default", "strong"}
    assert requested(None, None) == {} and requested("strong", None) == {"strength": "strong"}


def test_a_revert_replays_a_batch_with_its_own_lambda() -> None:
    hparams = {"mom2_update_weight": 45000.0}  # as stored: the older name
    assert replay_weight(hparams, {"request": {"strength": "conservative"}}) == 45000.0
    assert replay_weight(hparams, {"request": {}}) is None
    assert replay_weight(hparams, {}) is None


def test_unused_request_options_leave_the_stored_payload_as_before() -> None:
    from app.store.payloads import EditJob

    plain = EditJob(facts=[{"subject": "a"}], method="fe").to_json()
    assert plain == {"kind": "edit", "facts": [{"subject": "a"}], "method": "fe"}
    full = EditJob(facts=[], method="fe", gate={"max_kl": 0.1}, strength="strong").to_json()
    assert full["gate"] == {"max_kl": 0.1} and full["strength"] == "strong"
    assert "mom2_update_weight" not in full


def test_unchanged_weights_give_zero_kl_even_when_the_delta_is_empty() -> None:
    model, tok = tiny_model(), tiny_tokenizer()
    empty = WeightDelta(updates={}, model_type=model.config.model_type)
    figures = measure(model, tok, CF[:1], empty, PROBES)
    assert figures["kl"] == pytest.approx(0.0, abs=1e-12)


def test_remembered_parent_probes_give_the_same_figures() -> None:
    from editing.evaluate.gate import measure_probed

    model, tok = tiny_model(), tiny_tokenizer()
    first = random_delta(model, (1,), scale=0.3)
    fresh, before, after = measure_probed(model, tok, CF, first, PROBES)
    reused, _, _ = measure_probed(model, tok, CF, first, PROBES, parent_probes=before)
    assert reused.pop("parent_probes_reused") and not fresh.pop("parent_probes_reused")
    assert reused == fresh
    # the new version's probe scores serve as the parent's for the next batch
    second = random_delta(model, (2,), scale=0.3)
    with with_delta(model, first):
        chained, _, _ = measure_probed(model, tok, CF, second, PROBES, parent_probes=after)
        plain, _, _ = measure_probed(model, tok, CF, second, PROBES)
    assert chained["kl"] == pytest.approx(plain["kl"], rel=1e-9, abs=1e-15)
    assert chained["top1_agreement"] == plain["top1_agreement"]


def test_gate_settings_are_bounded_and_blank_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    assert Settings().gate_min_efficacy is None and Settings().gate_max_kl is None
    monkeypatch.setenv("MODELEDIT_GATE_MIN_EFFICACY", "90")
    monkeypatch.setenv("MODELEDIT_GATE_MAX_KL", "")
    assert (Settings().gate_min_efficacy, Settings().gate_max_kl) == (90.0, None)
    for name, value in (("MODELEDIT_GATE_MIN_EFFICACY", "101"),
                        ("MODELEDIT_GATE_MAX_KL", "-1"), ("MODELEDIT_GATE_MAX_KL", "nan")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=name.removeprefix("MODELEDIT_").lower()):
            Settings()
        monkeypatch.delenv(name)


def test_chat_efficacy_is_measured_on_the_facts_with_a_question_and_judged() -> None:
    from dataclasses import replace

    from editing.evaluate.chat import UserView

    model, tok = tiny_model(), tiny_tokenizer()
    delta = random_delta(model, (1,), scale=0.3)
    assert measure(model, tok, CF, delta, PROBES)["chat_efficacy"] is None  # no question given
    asked = [replace(CF[0], question=f"Tell me about {CF[0].subject}?"), CF[1]]
    figures = measure(model, tok, asked, delta, PROBES)
    reference = UserView(tok)
    edited_rows, base_rows = reference.rows(asked[0])
    from editing.evaluate.scoring import score_two_sided

    edited, base = score_two_sided(model, tok, edited_rows, base_rows, delta, next_for=base_rows)
    assert figures["chat_efficacy"] == 100.0 * reference.metrics(asked[0], edited, base)["chat_efficacy"]
    assert judge({"efficacy": 100.0, "chat_efficacy": 50.0, "kl": 0.0},
                 GateThresholds(min_chat_efficacy=60)) == ["chat efficacy 50% < 60% required"]
    assert judge({"efficacy": 100.0, "chat_efficacy": None, "kl": 0.0},
                 GateThresholds(min_chat_efficacy=60)) == []
    assert GateThresholds().overridden({"min_chat_efficacy": 80}).min_chat_efficacy == 80.0
    assert GateThresholds(min_chat_efficacy=0).enabled
