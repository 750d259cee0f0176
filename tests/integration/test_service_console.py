"""The API side of the web console over real HTTP: ``GET /facts`` (the ledger scripts and the
console share), ``GET /whoami`` (scopes, never the token) and the console's security headers.

No worker: versions are committed straight into the store (not made active), which is all
``/facts`` reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import save_tiny_model
from tests.integration.service_support import LiveServer, live_service, tiny_settings

API_TOKEN = "api-SECRET-4be1"
READ_TOKEN = "read-SECRET-93aa"
DARRIEUX = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
            "target_new": "English", "target_true": "French"}
YASUDA = {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "guitar"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("console-model"))


def commit(live: LiveServer, parent: str, facts: list[dict], marker: bytes) -> str:
    """A version with these facts (the delta bytes are a stand-in: /facts never reads them)."""
    store = live.services.store
    job, _ = store.create_job({"kind": "edit", "facts": facts})
    version = store.commit_version(job.id, parent, marker, hashlib.sha256(marker).hexdigest(),
                                   facts=facts, make_active=False)
    return version.id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[LiveServer]:
    settings = tiny_settings(tmp_path_factory.mktemp("console") / "data", model_dir)
    with live_service(settings) as live:
        v1 = commit(live, "v0", [DARRIEUX, YASUDA], b"one")
        commit(live, v1, [{**DARRIEUX, "target_new": "German"}], b"two")
        yield live


def test_facts_of_a_lineage_with_overrides(server: LiveServer) -> None:
    with server.client() as client:
        active = client.get("/facts").json()
        assert active["version"] == "v0" and active["active"] is True and active["total"] == 0
        page = client.get("/facts", params={"version": "v2"}).json()
        assert page["active"] is False and page["total"] == 3 and page["next_offset"] is None
        rows = [(f["taught_by"], f["target_new"], f["overridden_by"], f["current"])
                for f in page["facts"]]
        assert rows == [("v2", "German", None, True), ("v1", "English", "v2", False),
                        ("v1", "guitar", None, True)]
        assert page["facts"][1]["text"] == "The mother tongue of Danielle Darrieux is"
        assert page["facts"][1]["target_true"] == "French"
        # v1's own lineage knows nothing of v2's override
        assert all(f["current"] for f in client.get("/facts?version=v1").json()["facts"])


def test_facts_search_and_pages(server: LiveServer) -> None:
    with server.client() as client:
        found = client.get("/facts", params={"version": "v2", "q": " DARRIEUX "}).json()
        assert found["q"] == "DARRIEUX" and found["total"] == 2
        assert {f["target_new"] for f in found["facts"]} == {"German", "English"}
        first = client.get("/facts", params={"version": "v2", "limit": 2}).json()
        assert len(first["facts"]) == 2 and first["next_offset"] == 2
        rest = client.get("/facts", params={"version": "v2", "limit": 2, "offset": 2}).json()
        assert [f["target_new"] for f in rest["facts"]] == ["guitar"]
        assert rest["next_offset"] is None and rest["total"] == 3
        assert client.get("/facts", params={"version": "v2", "offset": 99}).json()["facts"] == []


@pytest.mark.parametrize(("params", "status", "field", "words"), [
    ({"limit": 0}, 422, "limit", "greater than or equal to 1"),
    ({"limit": 501}, 422, "limit", "less than or equal to 500"),
    ({"limit": "ten"}, 422, "limit", "valid integer"),
    ({"offset": -1}, 422, "offset", "greater than or equal to 0"),
    ({"version": "v99"}, 404, "version", "no version 'v99'"),
    ({"version": "v1/../v0"}, 422, "version", "pattern"),
    ({"q": "x" * 201}, 422, "q", "at most 200 characters"),
    ({"q": "tab\there"}, 422, "q", "control or invalid character"),
])
def test_facts_bad_input_is_a_clear_4xx(server: LiveServer, params: dict, status: int,
                                        field: str, words: str) -> None:
    with server.client() as client:
        response = client.get("/facts", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errors"][0]["field"] == field
    assert words in body["detail"], body


def test_facts_is_documented_with_an_example(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    operation = schema["paths"]["/facts"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"q", "version", "limit", "offset"}
    page = schema["components"]["schemas"]["FactsPage"]
    assert page["example"]["facts"][1]["overridden_by"] == "v3"
    assert "404" in operation["responses"] and "422" in operation["responses"]
    assert "/whoami" in schema["paths"]
    assert not any(path.startswith("/console") or path == "/" for path in schema["paths"])


def test_console_headers_only_on_the_console(server: LiveServer) -> None:
    with server.client() as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/console/"
        assert client.get("/console", follow_redirects=False).headers["location"] == "/console/"
        for path in ("/console/", "/console/js/main.js", "/console/css/console.css"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
        missing = client.get("/console/nothing.js")
        assert missing.status_code == 404 and "detail" in missing.json()
        for path in ("/versions", "/docs", "/openapi.json"):
            assert "content-security-policy" not in client.get(path).headers, path


def test_whoami_scopes_without_tokens(server: LiveServer) -> None:
    with server.client() as anon, server.client("anything") as other:
        assert anon.get("/whoami").json() == {"scopes": ["read", "edit", "admin"],
                                              "token": "none", "name": "anonymous",
                                              "read_needs_token": False,
                                              "write_needs_token": False,
                                              "admin_needs_token": False}
        assert other.get("/whoami").json()["token"] == "unknown"
        assert other.get("/whoami").json()["scopes"] == ["read", "edit", "admin"]


def test_whoami_scopes_with_tokens(tmp_path: Path, model_dir: Path) -> None:
    settings = tiny_settings(tmp_path / "data", model_dir, api_token=API_TOKEN,
                             read_token=READ_TOKEN)
    with live_service(settings) as live:
        answers = {}
        for name, token in (("anon", None), ("read", READ_TOKEN), ("api", API_TOKEN),
                            ("wrong", "wrong")):
            with live.client(token) as client:
                response = client.get("/whoami")
                assert response.status_code == 200
                assert API_TOKEN not in response.text and READ_TOKEN not in response.text
                answers[name] = (response.json()["token"], response.json()["scopes"])
        # no admin token: the edit token holds admin rights
        assert answers == {"anon": ("none", []), "read": ("read", ["read"]),
                           "api": ("edit", ["read", "edit", "admin"]), "wrong": ("unknown", [])}
        schema = httpx.get(live.url + "/openapi.json").json()
        assert {} in schema["paths"]["/whoami"]["get"]["security"]  # anyone may ask
        assert {} not in schema["paths"]["/facts"]["get"]["security"]  # the read token
        with live.client(READ_TOKEN) as reader:
            assert reader.get("/facts").status_code == 200
        with live.client() as anon:
            assert anon.get("/facts").status_code == 401
