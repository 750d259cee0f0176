"""The /v1 proxy to vLLM under a client that leaves and one that must wait, through real HTTP:
the real service (uvicorn, Redis, store, adapter sync, proxy) in front of a stand-in for vLLM
(its OpenAI routes, served by uvicorn on loopback: vLLM itself does not run on this machine's
CI). The stand-in holds each prompt-logprob request until the test lets it go, so the proxy's
one-at-a-time lock is observably held; every step waits on observed state.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.e2e.harness import free_port, save_tiny_model, wait_for
from tests.integration.service_support import LiveServer, live_service, tiny_settings

ECHO = {"model": "v0", "prompt": "x", "max_tokens": 0, "echo": True, "logprobs": 0}


class FakeVllm:
    """vLLM's model list and completions; answers 503 until ``can_generate`` is set."""

    def __init__(self) -> None:
        self.can_generate = threading.Event()
        self.release = threading.Event()
        self.held = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/models", self.models),
                                Route("/v1/completions", self.complete, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def models(self, _: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "base", "parent": None, "root": "base"}]})

    async def complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        if not self.can_generate.is_set() or body.get("prompt") == "boom":
            return JSONResponse({"detail": f"engine at {self.url} dead"}, status_code=503)
        if body.get("echo"):
            self.held += 1
            await anyio.to_thread.run_sync(self.release.wait)
        return JSONResponse({"id": "c", "object": "text_completion", "model": body["model"],
                             "choices": [{"index": 0, "text": "y", "finish_reason": "length"}]})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, FakeVllm]]:
    fake = FakeVllm()
    fake.thread.start()
    wait_for(lambda: fake.server.started, 30, "the stand-in vLLM")
    model = save_tiny_model(tmp_path_factory.mktemp("model"))
    settings = tiny_settings(tmp_path_factory.mktemp("data"), Path(model), rate_limit=0,
                             vllm_url=fake.url, vllm_poll_s=0.1)
    try:
        with live_service(settings) as server:
            yield server, fake
    finally:
        fake.release.set()
        fake.server.should_exit = True
        fake.thread.join(10)


def ready_detail(server: LiveServer) -> str:
    return httpx.get(f"{server.url}/ready", timeout=30).json()["detail"] or ""


def test_ready_waits_until_vllm_answers_a_query(stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    wait_for(lambda: server.services.vllm.sync.up, what="the sync to see vLLM")
    assert "vLLM has not answered a query yet" in ready_detail(server)
    fake.can_generate.set()
    wait_for(lambda: "vLLM" not in ready_detail(server), what="/ready to stop naming vLLM")


def test_the_deadline_is_504_and_cancels_upstream(stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    fake.can_generate.set()
    services = server.services
    settings, held = services.settings, fake.held
    services.settings = settings.model_copy(update={"query_timeout_s": 0.5})
    try:  # the stand-in holds the request: no answer can come before the deadline
        late = httpx.post(f"{server.url}/v1/completions", json=ECHO, timeout=60)
    finally:
        services.settings = settings
    assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
    assert fake.held == held + 1
    wait_for(lambda: not services.vllm.proxy._serial.locked(), what="the lock released")


def test_the_serial_lock_is_bounded_and_released_when_a_client_leaves(
        stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    fake.can_generate.set()
    proxy = server.services.vllm.proxy
    proxy.serial_wait_s = 0.5
    held = fake.held
    body = json.dumps(ECHO).encode()
    leaving = socket.create_connection(("127.0.0.1", server.port))
    leaving.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: "
                    b"application/json\r\ncontent-length: " + str(len(body)).encode()
                    + b"\r\n\r\n" + body)
    wait_for(lambda: fake.held == held + 1, what="the first request held upstream")
    waiting = httpx.post(f"{server.url}/v1/completions", json=ECHO, timeout=60)
    assert waiting.status_code == 429 and waiting.headers["retry-after"] == "1"
    assert waiting.json()["error"]["code"] == "serialised_busy"
    leaving.close()  # the first client leaves: its request is cancelled, the lock released
    wait_for(lambda: not proxy._serial.locked(), what="the lock released")
    fake.release.set()
    with ThreadPoolExecutor(1) as pool:
        after = pool.submit(httpx.post, f"{server.url}/v1/completions", json=ECHO, timeout=60)
        assert after.result().status_code == 200


def test_vllm_errors_name_no_internal_url(stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    fake.can_generate.set()
    failed = httpx.post(f"{server.url}/v1/completions",
                        json={"model": "v0", "prompt": "boom", "max_tokens": 1}, timeout=60)
    assert failed.status_code == 503 and failed.headers["retry-after"]
    assert failed.json()["error"]["code"] == "vllm_unavailable"
    assert fake.url not in failed.text and str(fake.port) not in failed.text
