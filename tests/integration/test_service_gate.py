"""The quality gate and per-request strength on the real stack (uvicorn, worker thread, real
Redis, SQLite, the tiny model): a batch that misses a threshold is committed but held, the
active version stays, the figures and the reason are visible over HTTP, a rollback releases
it, and later edits build on the active version; strength changes the recorded λ; bad
options are a 422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.e2e.harness import TINY_HPARAMS, save_tiny_model, wait_job
from tests.integration.service_support import (
    LiveServer,
    live_service,
    live_service_with_worker,
    tiny_settings,
)

FACTS = [
    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
     "target_new": "English", "target_true": "French",
     "paraphrase_prompts": ["Danielle Darrieux speaks"]},
    {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "piano"},
]
LAMBDA = TINY_HPARAMS["covariance_weight"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("gate-model"))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELEDIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gcache"))


@pytest.fixture
def service(request: pytest.FixtureRequest, tmp_path: Path,
            model_dir: Path) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """API + worker sharing one data directory; ``request.param``: extra settings."""
    settings: Settings = tiny_settings(tmp_path / "data", model_dir,
                                       **getattr(request, "param", {}))
    with live_service_with_worker(settings) as live, live.client() as client:
        yield live, client


def edit(client: httpx.Client, **options: object) -> dict:
    response = client.post("/edits", json={"facts": FACTS, **options})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["state"] == "committed", job
    return job


def version(client: httpx.Client, vid: str) -> dict:
    response = client.get(f"/versions/{vid}")
    assert response.status_code == 200, response.text
    return response.json()


def active(client: httpx.Client) -> str:
    return client.get("/versions").json()["active"]


def test_without_thresholds_the_batch_activates_with_its_figures(service) -> None:  # noqa: ANN001
    _, client = service
    job = edit(client)
    assert job["activated"] is True
    record = version(client, job["version"])
    assert record["state"] == "committed" and record["active"]
    gate = record["gate"]
    assert gate["passed"] and not gate["held"] and gate["reason"] is None
    assert gate["thresholds"] == {"min_efficacy": None, "max_kl": None, "min_chat_efficacy": None}
    assert 0 <= gate["efficacy"] <= 100 and 0 <= gate["generalization"] <= 100
    assert gate["kl"] > 0 and 0 <= gate["top1_agreement"] <= 100
    assert gate["probes"] >= 40 and gate["facts"] == 2 and gate["paraphrases"] == 1
    assert job["gate"] == gate
    assert record["timings"]["gate_s"] == gate["gate_s"]
    again = version(client, edit(client)["version"])
    assert again["gate"]["parent_probes_reused"] is True  # the previous batch's new side
    timings = again["timings"]  # what it costs is bench.gate_cost's to measure, not a test's
    assert 0 < timings["gate_s"] and 0 < timings["compute_s"], timings


@pytest.mark.parametrize("service", [{"gate_max_kl": 0.0}], indirect=True)
def test_a_batch_that_misses_the_gate_is_held_until_rolled_back(service) -> None:  # noqa: ANN001
    _, client = service
    held = edit(client)
    assert held["activated"] is False
    assert held["gate"]["passed"] is False and held["gate"]["held"] is True
    assert "probe KL" in held["gate"]["reason"] and "> 0 nats allowed" in held["gate"]["reason"]
    record = version(client, held["version"])
    assert record["state"] == "held" and not record["active"]
    assert record["gate"]["kl"] > 0 and record["gate"]["thresholds"]["max_kl"] == 0.0
    assert active(client) == "v0"
    listed = {v["id"]: v for v in client.get("/versions").json()["versions"]}
    assert listed[held["version"]]["state"] == "held"

    # the same batch with a per-request threshold it meets: the request wins over the setting
    passed = edit(client, gate={"max_kl": 50})
    assert passed["activated"] is True and passed["gate"]["thresholds"]["max_kl"] == 50
    assert passed["gate"]["parent_probes_reused"] is True  # v0's, from the held batch
    record = version(client, passed["version"])
    assert record["parent"] == "v0", "built on the active version, not on the held one"
    assert record["state"] == "committed" and active(client) == passed["version"]

    # an operator activates the held version with the rollback endpoint
    response = client.post(f"/versions/{held['version']}/rollback")
    assert response.status_code == 200, response.text
    assert active(client) == held["version"]
    record = version(client, held["version"])
    assert record["state"] == "committed" and record["active"]
    assert record["gate"]["held"] is True and record["gate"]["released_at"]

    later = edit(client, gate={"max_kl": 50})
    assert version(client, later["version"])["parent"] == held["version"]


@pytest.mark.parametrize("service", [{"gate_min_efficacy": 0.0}], indirect=True)
def test_a_request_efficacy_threshold_overrides_the_setting(service) -> None:  # noqa: ANN001
    _, client = service
    job = edit(client, gate={"min_efficacy": 100, "max_kl": 0})
    gate = job["gate"]
    assert gate["thresholds"] == {"min_efficacy": 100.0, "max_kl": 0.0, "min_chat_efficacy": None}
    assert job["activated"] is False and active(client) == "v0"
    if gate["efficacy"] < 100:
        assert f"efficacy {gate['efficacy']:.0f}" in gate["reason"]
        assert "< 100% required" in gate["reason"]


def test_strength_sets_the_lambda_recorded_with_the_version(service) -> None:  # noqa: ANN001
    _, client = service
    conservative = version(client, edit(client, strength="conservative")["version"])
    strong = version(client, edit(client, strength="strong")["version"])
    explicit = version(client, edit(client, covariance_weight=500)["version"])
    plain = version(client, edit(client)["version"])
    assert conservative["hparams"]["covariance_weight"] == pytest.approx(3 * LAMBDA)
    assert strong["hparams"]["covariance_weight"] == pytest.approx(LAMBDA / 3)
    assert explicit["hparams"]["covariance_weight"] == 500
    assert plain["hparams"]["covariance_weight"] == LAMBDA
    assert "mom2_update_weight" not in plain["hparams"]  # read back under the public name
    assert conservative["diagnostics"]["request"] == {"strength": "conservative"}
    assert explicit["diagnostics"]["request"] == {"covariance_weight": 500}
    # a larger λ changes the weights less
    norm = {name: sum(s["norm"] for s in v["layer_stats"])
            for name, v in (("conservative", conservative), ("strong", strong))}
    assert norm["conservative"] < norm["strong"]


BAD_OPTIONS = [
    ({"strength": "extreme"}, "strength", "conservative"),
    ({"covariance_weight": 1}, "covariance_weight", "100"),
    ({"covariance_weight": 1e7}, "covariance_weight", "1000000"),
    ({"covariance_weight": "many"}, "covariance_weight", ""),
    ({"strength": "strong", "covariance_weight": 500}, "body", "not both"),
    ({"method": "fe_alphaedit", "covariance_weight": 500}, "covariance_weight", "strength"),
    # the name of an earlier version: refused, naming the field that replaced it
    ({"mom2_update_weight": 600}, "body", "use 'covariance_weight'"),
    # a removed research switch (the API never took hyper-parameters): refused, named
    ({"z_stop": "total"}, "z_stop", ""),
    ({"gate": {"min_efficacy": 101}}, "gate.min_efficacy", "100"),
    ({"gate": {"min_efficacy": -1}}, "gate.min_efficacy", "0"),
    ({"gate": {"max_kl": -0.5}}, "gate.max_kl", "0"),
    ({"gate": {"max_kl": 1000}}, "gate.max_kl", "100"),
    ({"gate": {"max_kll": 1}}, "gate.max_kll", ""),
    ({"gate": 5}, "gate", ""),
]


def test_bad_gate_and_strength_options_are_422(tmp_path: Path, model_dir: Path) -> None:
    settings = tiny_settings(tmp_path / "data", model_dir)
    with live_service(settings) as live, live.client() as client:
        for options, field, hint in BAD_OPTIONS:
            response = client.post("/edits", json={"facts": FACTS, **options})
            assert response.status_code == 422, (options, response.text)
            body = response.json()
            fields = [e["field"] for e in body["errors"]]
            assert any(f == field or f.startswith(field) for f in fields), (options, body)
            assert hint in body["detail"], (options, body)
        assert client.get("/edits").json() == []
