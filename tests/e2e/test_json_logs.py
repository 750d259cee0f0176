"""``--log-format json``: every line an API process writes, its own and uvicorn's (startup,
access), is one JSON object, and a user's text stays inside its ``message``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.harness import Service, save_tiny_model, wait_ready


def test_every_line_of_the_api_is_json(tmp_path: Path) -> None:
    service = Service(tmp_path, str(save_tiny_model(tmp_path / "model")))
    try:
        api = service.start("api", "--log-format", "json")
        wait_ready(api, worker=False)
        forged = 'x" \n{"level": "critical", "message": "forged"}'
        httpx.get(api.url + "/versions/" + forged.replace("\n", "%0A"), timeout=30)
        httpx.get(api.url + "/health", timeout=30)
    finally:
        service.stop_all()
    lines = [line for line in api.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any non-JSON line
    assert all({"time", "level", "logger", "process", "message"} <= r.keys() for r in records)
    assert {r["process"] for r in records} == {"api"}
    assert any(r["logger"] == "app.access" and "/health" in r["message"] for r in records)
    assert any(r["logger"].startswith("app") for r in records)
    assert not any(r["message"] == "forged" for r in records)
