"""Scopes (read, edit, admin) and the audit trail through real HTTP, real Redis and a real
worker: 401 for a missing or unknown key, 403 for a valid key without the scope, the gate only
loosened by admin, own-job cancels, and who changed the active version, by token name."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import save_tiny_model, wait_for
from tests.integration.service_support import (
    LiveServer,
    RunningWorker,
    live_service,
    tiny_settings,
)

READ = "read-SECRET-1a2b"
EDIT = "edit-SECRET-3c4d"
ADMIN = "admin-SECRET-5e6f"
FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("scopes-model"))


@pytest.fixture
def server(tmp_path: Path, model_dir: Path) -> Iterator[LiveServer]:
    """Named read and admin tokens, an unnamed edit token, and an operator's gate."""
    settings = tiny_settings(tmp_path / "data", model_dir, read_token=f"dash:{READ}",
                             api_token=EDIT, admin_token=f"ops:{ADMIN}", rate_limit=1000,
                             gate_min_efficacy=50.0, gate_max_kl=1.0)
    with live_service(settings) as live:
        yield live


EDIT_NAME = "token-" + hashlib.sha256(EDIT.encode()).hexdigest()[:8]


def clients(live: LiveServer) -> dict[str, httpx.Client]:
    return {"anon": live.client(), "wrong": live.client("wrong"), "read": live.client(READ),
            "edit": live.client(EDIT), "admin": live.client(ADMIN)}


# (method, path, json, the weakest scope that passes, the status it then gets)
ROUTES = [
    ("GET", "/versions", None, "read", 200),
    ("GET", "/audit", None, "read", 200),
    ("GET", "/edits", None, "read", 200),
    ("POST", "/versions/v0/evaluate", {"include_own_facts": True}, "edit", 422),
    ("POST", "/versions/v0/rollback", None, "admin", 200),
    ("POST", "/versions/v0/revert", None, "admin", 409),
    ("GET", "/versions/v0/export", None, "admin", 200),
]
RANK = ["read", "edit", "admin"]


def test_scope_matrix(server: LiveServer) -> None:
    bodies: list[str] = []
    opened = clients(server)
    try:
        for method, path, body, needed, ok in ROUTES:
            for who, client in opened.items():
                response = client.request(method, path, json=body)
                bodies.append(response.text if "export" not in path else "")
                if who in ("anon", "wrong"):
                    expected = 401
                elif RANK.index(who) >= RANK.index(needed):
                    expected = ok
                else:
                    expected = 403
                assert response.status_code == expected, (method, path, who, response.text)
                if expected == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
                if expected == 403:
                    assert needed in response.json()["detail"], response.text
    finally:
        for client in opened.values():
            client.close()
    assert not [b for b in bodies if READ in b or EDIT in b or ADMIN in b]


def test_whoami_names_the_scopes_never_the_token(server: LiveServer) -> None:
    expected = {"anon": ([], "none", "anonymous"), "wrong": ([], "unknown", "anonymous"),
                "read": (["read"], "read", "dash"),
                "edit": (["read", "edit"], "edit", EDIT_NAME),
                "admin": (["read", "edit", "admin"], "admin", "ops")}
    for who, client in clients(server).items():
        with client:
            body = client.get("/whoami").json()
        assert (body["scopes"], body["token"], body["name"]) == expected[who], who
        assert body["admin_needs_token"] is True


def test_only_admin_loosens_the_gate(server: LiveServer) -> None:
    with server.client(EDIT) as edit, server.client(ADMIN) as admin:
        off = {"facts": [FACT], "gate": {"min_efficacy": 0, "max_kl": 100}}
        refused = edit.post("/edits", json=off)
        assert refused.status_code == 403, refused.text
        assert "gate.min_efficacy 0" in refused.json()["detail"]
        assert "gate.max_kl 100" in refused.json()["detail"]
        tighter = {"facts": [FACT], "gate": {"min_efficacy": 90, "max_kl": 0.5,
                                             "min_chat_efficacy": 10}}
        assert edit.post("/edits", json=tighter).status_code == 202
        assert admin.post("/edits", json=off).status_code == 202


def test_edit_cancels_its_own_jobs_admin_any(server: LiveServer) -> None:
    with server.client(EDIT) as edit, server.client(ADMIN) as admin:
        mine = edit.post("/edits", json={"facts": [FACT]}).json()["job_id"]
        theirs = admin.post("/edits", json={"facts": [{**FACT, "subject": "Paris"}]}) \
            .json()["job_id"]
        assert edit.get(f"/edits/{theirs}").json()["submitter"] == "ops"
        refused = edit.post(f"/edits/{theirs}/cancel")
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        assert edit.get(f"/edits/{theirs}").json()["state"] == "queued"
        own = edit.post(f"/edits/{mine}/cancel").json()
        assert (own["state"], own["cancel_requested_by"], own["submitter"]) == (
            "cancelled", EDIT_NAME, EDIT_NAME)
        assert admin.post(f"/edits/{theirs}/cancel").json()["cancel_requested_by"] == "ops"


def test_the_audit_trail_names_who_moved_the_active_version(server: LiveServer) -> None:
    worker = RunningWorker(server.services.settings).start()
    try:
        with server.client(EDIT) as edit, server.client(ADMIN) as admin, \
                server.client(READ) as reader:
            loosened = edit.post("/edits", json={"facts": [FACT], "gate": {"min_efficacy": 0}})
            assert loosened.status_code == 403  # the operator's gate holds for the edit token
            job_id = admin.post("/edits", json={"facts": [FACT], "gate": {
                "min_efficacy": 0, "max_kl": 100}}).json()["job_id"]

            def committed() -> str | None:
                body = reader.get(f"/edits/{job_id}").json()
                assert body["state"] in ("queued", "running", "committed"), body
                return body["version"] if body["state"] == "committed" else None

            v1 = wait_for(committed, 300, "the edit to commit")
            assert admin.post("/versions/v0/rollback").status_code == 200
            assert admin.post(f"/versions/{v1}/rollback").status_code == 200
            trail = reader.get("/audit").json()
            assert [(e["action"], e["actor"], e["from_version"], e["to_version"])
                    for e in trail] == [("roll_forward", "ops", "v0", v1),
                                        ("rollback", "ops", v1, "v0"),
                                        ("commit", "ops", "v0", v1),
                                        ("init", None, None, "v0")]
            assert trail[2]["job_id"] == job_id
            assert [e["seq"] for e in reader.get("/audit", params={
                "before": trail[1]["seq"], "limit": 1}).json()] == [trail[2]["seq"]]
            assert READ not in str(trail) and ADMIN not in str(trail)
    finally:
        worker.stop()


def test_reads_open_without_a_read_token_accept_any_key(tmp_path: Path,
                                                        model_dir: Path) -> None:
    settings = tiny_settings(tmp_path / "data", model_dir, api_token=EDIT)
    with live_service(settings) as live:
        for token in (None, "sk-anything", EDIT):
            with live.client(token) as client:
                assert client.get("/versions").status_code == 200
                assert client.get("/audit").status_code == 200
        with live.client("sk-anything") as client:
            assert client.post("/edits", json={"facts": [FACT]}).status_code == 401
        with live.client(EDIT) as client:  # no admin token: the edit token holds admin rights
            assert client.post("/versions/v0/rollback").status_code == 200
