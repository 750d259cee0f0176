"""The whole service on the tiny model, as users run it: separate API and worker processes,
real Redis, real HTTP.

submit -> poll -> committed -> queries reflect the edit on the new version and not the old ->
rollback (bit-identical weights) -> revert of a middle batch keeps the later ones -> a second
API process follows -> restart everything: same active version, same weights.
"""

from __future__ import annotations

import io
import json
import signal
import tarfile

import httpx
import pytest
from transformers import AutoModelForCausalLM

from editing.weights.fingerprint import weights_digest
from tests.e2e.faults import SCORE_TOL as TOL
from tests.e2e.harness import Service, wait_for, wait_job, wait_ready

CLEAN_EXIT = (0, -signal.SIGTERM)
"""uvicorn re-raises the SIGTERM it handled after a clean shutdown."""

FACTS = [
    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
     "target_new": "English"},
    {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "piano"},
    {"subject": "Michel Rocard", "prompt": "{} is a native speaker of", "target_new": "Italian"},
]


def prompt_of(fact: dict) -> str:
    return fact["prompt"].replace("{}", fact["subject"])


def logprob(client: httpx.Client, fact: dict, version: str | None = None) -> tuple[str, float]:
    body = {"prompt": prompt_of(fact), "candidates": [fact["target_new"]]}
    if version:
        body["version"] = version
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    return data["version"], data["scores"][0]["logprob"]


def submit(client: httpx.Client, facts: list[dict], key: str | None = None) -> str:
    body: dict = {"facts": facts}
    if key:
        body["idempotency_key"] = key
    response = client.post("/edits", json=body)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def commit(client: httpx.Client, facts: list[dict]) -> str:
    job = wait_job(client, submit(client, facts))
    assert job["state"] == "committed", job
    assert job["error"] is None
    return job["version"]


def ready(client: httpx.Client) -> dict:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    return response.json()


def test_edit_query_rollback_revert_follow_restart(tiny_service: Service) -> None:
    service = tiny_service
    worker = service.start("worker")
    api = service.start("api")
    api2 = service.start("api")  # checked later: it must follow every commit and rollback
    first = wait_ready(api)
    assert first["version"] == "v0" and first["worker"] and first["redis"]
    base_digest = first["weights_sha256"]
    client = httpx.Client(base_url=api.url, timeout=60)

    before = {f["subject"]: logprob(client, f)[1] for f in FACTS}
    gen_body = {"prompt": prompt_of(FACTS[0]), "max_new_tokens": 6}
    base_text = client.post("/generate", json=gen_body).json()

    # -- submit -> poll -> committed ------------------------------------------------------
    v1 = commit(client, [FACTS[0]])
    assert v1 == "v1"
    wait_for(lambda: ready(client)["version"] == v1, what="API to follow v1")
    served, after = logprob(client, FACTS[0])
    assert served == v1
    assert after > before[FACTS[0]["subject"]] + 1e-3, (before, after)
    # the old version still answers as before the edit (to float rounding: a prompt the
    # engine has seen reuses its stored prefix, MODELEDIT_PREFIX_TOKENS)
    old_version, old_logprob = logprob(client, FACTS[0], "v0")
    assert old_version == "v0" and old_logprob == pytest.approx(before[FACTS[0]["subject"]], abs=TOL)
    old_text = client.post("/generate", json={**gen_body, "version": "v0"}).json()
    assert old_text == {"version": "v0", "text": base_text["text"]}
    assert client.post("/generate", json=gen_body).json()["version"] == v1
    record = client.get(f"/versions/{v1}").json()
    assert record["parent"] == "v0" and record["facts"][0]["target_new"] == "English"
    assert record["layer_stats"] and all(s["rank"] == 1 for s in record["layer_stats"])
    assert ready(client)["weights_sha256"] == record["weights_sha256"] != base_digest

    # -- evaluate (in the worker, stored with the version) and export -------------------
    response = client.post(f"/versions/{v1}/evaluate", json={"records": [
        {**FACTS[1], "target_true": "guitar", "neighborhood_prompts": ["Apple A5 was created by"]}
    ]})
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["state"] == "committed" and job["version"] == v1, job
    evaluation = client.get(f"/versions/{v1}").json()["evaluation"]
    assert evaluation["records"] == 2 and evaluation["reference"] == "v0"
    assert "efficacy_accuracy" in json.dumps(evaluation)
    exported = client.get(f"/versions/{v1}/export")
    assert exported.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(exported.content)) as tar:
        tar.extractall(service.root / "export", filter="data")
    merged = AutoModelForCausalLM.from_pretrained(service.root / "export" / v1)
    assert weights_digest(merged) == record["weights_sha256"]

    # -- two more batches ---------------------------------------------------------------
    v2 = commit(client, [FACTS[1]])
    v3 = commit(client, [FACTS[2]])
    wait_for(lambda: ready(client)["version"] == v3, what="API to follow v3")
    listing = client.get("/versions").json()
    assert listing["active"] == v3
    assert [(v["id"], v["parent"]) for v in listing["versions"]] == [
        ("v0", None), (v1, "v0"), (v2, v1), (v3, v2)]
    at_v3 = {f["subject"]: logprob(client, f)[1] for f in FACTS}
    v3_digest = client.get(f"/versions/{v3}").json()["weights_sha256"]

    # -- rollback: exact weights, any number of times ------------------------------------
    for _ in range(2):
        back = client.post("/versions/v0/rollback")
        assert back.status_code == 200, back.text
        assert back.json()["weights_sha256"] == base_digest
        assert ready(client)["weights_sha256"] == base_digest
        assert {f["subject"]: logprob(client, f)[1] for f in FACTS} == pytest.approx(before, abs=TOL)
        forward = client.post(f"/versions/{v3}/rollback")
        assert forward.json()["weights_sha256"] == v3_digest
    assert {f["subject"]: logprob(client, f)[1] for f in FACTS} == pytest.approx(at_v3, abs=TOL)

    # -- revert the middle batch: the later one is recomputed on its parent ----------------
    response = client.post(f"/versions/{v2}/revert")
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["state"] == "committed", job
    v4 = job["version"]
    wait_for(lambda: ready(client)["version"] == v4, what="API to follow the revert")
    record = client.get(f"/versions/{v4}").json()
    assert record["parent"] == v1 and record["kind"] == "revert"
    assert record["source"]["reverted"] == v2 and record["source"]["replays"] == v3
    assert record["facts"][0]["subject"] == FACTS[2]["subject"]
    now = {f["subject"]: logprob(client, f)[1] for f in FACTS}
    kept_first, dropped, kept_last = (f["subject"] for f in FACTS)
    # (on a random tiny model an edit moves log-probs only a little, and only the first fact's
    # direction is reliable; the default-model test checks that edits work)
    assert now[kept_first] > before[kept_first] + 1e-3
    at_v1 = logprob(client, FACTS[2], v1)[1]
    assert now[kept_last] != at_v1, "the replayed later batch must change the weights"
    assert now != at_v3
    parents = {v["id"]: v["parent"] for v in client.get("/versions").json()["versions"]}
    assert parents[v4] == v1 and parents[v1] == "v0"
    v4_digest = record["weights_sha256"]
    assert ready(client)["weights_sha256"] == v4_digest

    # -- a second API process picked up the versions ------------------------------------
    second = wait_ready(api2)
    assert second["version"] == v4 and second["weights_sha256"] == v4_digest
    client2 = httpx.Client(base_url=api2.url, timeout=60)
    (second_version, second_lp), (first_version, first_lp) = logprob(client2, FACTS[0]), logprob(client, FACTS[0])
    assert second_version == first_version and second_lp == pytest.approx(first_lp, abs=TOL)
    # ...and follows a rollback made through the first one
    assert client.post(f"/versions/{v1}/rollback").status_code == 200
    v1_digest = client.get(f"/versions/{v1}").json()["weights_sha256"]
    wait_for(lambda: ready(client2)["version"] == v1, what="second API to follow rollback")
    assert ready(client2)["weights_sha256"] == v1_digest
    assert client.post(f"/versions/{v4}/rollback").status_code == 200
    wait_for(lambda: ready(client2)["version"] == v4, what="second API to follow v4")

    # -- restart everything: same active version, same weights ---------------------------
    client.close()
    client2.close()
    for proc in (api2, api, worker):
        assert proc.stop() in CLEAN_EXIT, proc.log()
    worker = service.start("worker")
    api = service.start("api")
    again = wait_ready(api)
    assert again["version"] == v4 and again["weights_sha256"] == v4_digest
    client = httpx.Client(base_url=api.url, timeout=60)
    assert logprob(client, FACTS[2])[1] == pytest.approx(now[kept_last], abs=TOL)
    client.close()
    for proc in (api, worker):
        assert proc.stop() in CLEAN_EXIT, proc.log()
