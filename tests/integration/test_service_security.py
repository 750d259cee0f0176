"""Tokens, rate limits shared across API processes, queue back-pressure, body limits, and
secrets kept out of responses and logs."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import save_tiny_model
from tests.integration.service_support import LiveServer, live_service, tiny_settings

API_TOKEN = "api-SECRET-7f3e9a"
READ_TOKEN = "read-SECRET-51c2d0"
FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("security-model"))


@pytest.fixture
def secured(tmp_path: Path, model_dir: Path) -> Iterator[LiveServer]:
    settings = tiny_settings(tmp_path / "data", model_dir, api_token=API_TOKEN,
                             read_token=READ_TOKEN, rate_limit=1000)
    with live_service(settings) as live:
        yield live


def test_tokens(secured: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    with secured.client() as anon, secured.client(READ_TOKEN) as reader, \
            secured.client(API_TOKEN) as writer, secured.client("wrong") as stranger:
        # health probes stay open
        assert anon.get("/health").status_code == 200
        # mutating endpoints: api token only; a missing or unknown key is a 401, a valid key
        # without the scope a 403
        for client, status in ((anon, 401), (stranger, 401), (reader, 403), (writer, 202)):
            response = client.post("/edits", json={"facts": [FACT]})
            bodies.append(response.text)
            assert response.status_code == status, response.text
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert "Authorization" in response.json()["detail"]
        for path in ("/versions/v0/rollback", "/versions/v0/revert"):
            response = reader.post(path)
            bodies.append(response.text)
            assert response.status_code == 403
        # read endpoints: the read token or the api token
        for client, status in ((anon, 401), (stranger, 401), (reader, 200), (writer, 200)):
            response = client.get("/versions")
            bodies.append(response.text)
            assert response.status_code == status, response.text
            score = client.post("/score", json={"prompt": "Hi", "candidates": ["x"]})
            assert score.status_code == status
    leaked = [text for text in bodies + [caplog.text] if API_TOKEN in text or READ_TOKEN in text]
    assert not leaked
    jobs = secured.services.store.list_jobs()
    assert len(jobs) == 1 and API_TOKEN not in str(jobs[0].payload)


def test_rate_limit_holds_across_api_processes(tmp_path: Path, model_dir: Path) -> None:
    """Two apps sharing one Redis prefix share the per-token budget."""
    first = tiny_settings(tmp_path / "data", model_dir, api_token=API_TOKEN, rate_limit=3,
                          rate_window_s=60)
    second = first.model_copy()
    with live_service(first) as one, live_service(second) as two:
        with one.client(API_TOKEN) as a, two.client(API_TOKEN) as b:
            codes = [a.post("/versions/v0/rollback").status_code,
                     b.post("/versions/v0/rollback").status_code,
                     a.post("/versions/v0/rollback").status_code]
            assert codes == [200, 200, 200]
            refused = b.post("/versions/v0/rollback")
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert "rate limit" in refused.json()["detail"]
            assert API_TOKEN not in refused.text
            # reads are not rate limited
            assert b.get("/versions").status_code == 200


def test_queue_back_pressure(tmp_path: Path, model_dir: Path) -> None:
    """No worker runs: jobs pile up until the limit, then 429 with Retry-After."""
    settings = tiny_settings(tmp_path / "data", model_dir, max_queue=2)
    with live_service(settings) as live, live.client() as client:
        for i in range(2):
            response = client.post("/edits", json={"facts": [FACT], "idempotency_key": f"k{i}"})
            assert response.status_code == 202
        full = client.post("/edits", json={"facts": [FACT]})
        assert full.status_code == 429, full.text
        assert int(full.headers["retry-after"]) > 0
        assert "queue is full" in full.json()["detail"]
        # a repeated idempotency key would also be refused while full: nothing new is stored
        assert live.services.store.count_unfinished() == 2
        assert live.services.queue_length() == 2


def test_body_limit_without_content_length(tmp_path: Path, model_dir: Path) -> None:
    """A chunked body (no Content-Length) is cut off at the limit too."""
    settings = tiny_settings(tmp_path / "data", model_dir, max_body_bytes=4096)
    with live_service(settings) as live:
        chunk = b'{"facts": [' + b" " * 8000 + b"]}"
        request = (
            b"POST /edits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(request)
            reply = sock.recv(4096).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 413"), reply
        assert live.services.store.count_unfinished() == 0


def test_exposed_without_token_refuses_to_start(capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    from app.cli import warn_if_exposed
    from app.settings import Settings

    with pytest.raises(SystemExit) as stopped:
        warn_if_exposed(Settings(host="0.0.0.0"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "MODELEDIT_API_TOKEN" in err
    assert "MODELEDIT_ALLOW_UNAUTHENTICATED=1" in err and "docker run -e" in err
    warn_if_exposed(Settings(host="0.0.0.0", allow_unauthenticated=True))  # on purpose
    assert "reads are open" in capsys.readouterr().err
    caplog.set_level(logging.WARNING)
    warn_if_exposed(Settings(host="0.0.0.0", api_token="ops:t0k3n-SECRET",
                             read_token="r-SECRET"))
    err = capsys.readouterr().err  # no banner (a log handler may echo the note below)
    assert "!" * 78 not in err and "SECRET" not in err
    assert "holds admin rights" in caplog.text and "SECRET" not in caplog.text
    caplog.clear()
    warn_if_exposed(Settings(host="0.0.0.0", api_token="t", admin_token="a"))
    assert "reads are open" in capsys.readouterr().err and "admin rights" not in caplog.text
    warn_if_exposed(Settings())  # loopback, no tokens: quiet
    assert capsys.readouterr().err == ""


def test_openapi_documents_every_endpoint(tmp_path: Path, model_dir: Path) -> None:
    settings = tiny_settings(tmp_path / "data", model_dir)
    with live_service(settings) as live, live.client() as client:
        schema = client.get("/openapi.json").json()
        metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "modeledit_http_requests" in metrics.text
    components = schema["components"]["schemas"]

    def has_example(ref_or_schema: dict) -> bool:
        if "$ref" in ref_or_schema:
            ref_or_schema = components[ref_or_schema["$ref"].split("/")[-1]]
        return "example" in ref_or_schema or "examples" in ref_or_schema

    expected = {"/edits", "/edits/{job_id}", "/versions", "/versions/{version}",
                "/versions/{version}/rollback", "/versions/{version}/revert",
                "/versions/{version}/evaluate", "/versions/{version}/export", "/score",
                "/generate", "/next-tokens", "/health", "/ready", "/metrics", "/facts", "/whoami"}
    assert expected <= set(schema["paths"])
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            assert op.get("summary"), (method, path)
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                assert has_example(body["schema"]) or "anyOf" in body["schema"], (method, path)
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "examples" in param["schema"] or "examples" in param, (method, path)
            ok = next((r for code, r in op["responses"].items() if code.startswith("2")), {})
            content = ok.get("content", {}).get("application/json")
            if content and content.get("schema"):
                schema_ = content["schema"]
                if schema_.get("type") == "array":
                    schema_ = schema_["items"]
                assert has_example(schema_), (method, path)


@pytest.mark.parametrize("command", ["serve", "api"])
def test_a_bare_start_beyond_loopback_prints_how_to_start(tmp_path: Path, command: str) -> None:
    """What a bare `docker run modeledit` does (the image sets MODELEDIT_HOST=0.0.0.0): exit 2
    before loading anything, saying how to start; an empty token (compose's default) is none."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELEDIT_")}
    env.update({"MODELEDIT_HOST": "0.0.0.0", "MODELEDIT_DATA_DIR": str(tmp_path / "data"),
                "MODELEDIT_API_TOKEN": "", "PYTHONPATH": str(Path.cwd())})
    done = subprocess.run([sys.executable, "-m", "app", command], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    for needed in ("refusing to start", "MODELEDIT_API_TOKEN", "MODELEDIT_ALLOW_UNAUTHENTICATED=1",
                   "docker run -e"):
        assert needed in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything
