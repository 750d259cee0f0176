"""The /v1 proxy to vLLM under a client that leaves and one that must wait, through real HTTP:
the real service (uvicorn, Redis, store, adapter sync, proxy) in front of a stand-in for vLLM
(its OpenAI routes, served by uvicorn on loopback: vLLM itself does not run on this machine's
CI). The stand-in holds each prompt-logprob request until the test lets it go, so the proxy's
one-at-a-time lock is observably held; every step waits on observed state. It answers as vLLM
does, with its own model names (``base`` for ``v0``), which the service must rewrite.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import openai
import pytest
import uvicorn
from openai.types.chat import ChatCompletionChunk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from transformers import AutoTokenizer

from tests.e2e.harness import free_port, save_tiny_model, wait_for
from tests.integration.service_support import LiveServer, live_service, tiny_settings
from tests.integration.test_openai_api import CHATML, until_ping

ECHO = {"model": "v0", "prompt": "x", "max_tokens": 0, "echo": True, "logprobs": 0}
CONTEXT = 64
"""The stand-in serves the base with this context, shorter than the tiny model's own (256),
as ``--max-model-len`` does."""


class FakeVllm:
    """vLLM's model list and completions; answers 503 until ``can_generate`` is set."""

    def __init__(self) -> None:
        self.can_generate = threading.Event()
        self.release = threading.Event()
        self.release_stream = threading.Event()
        self.held = 0
        self.bodies: list[dict] = []
        """Every generation request as vLLM received it."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/models", self.models),
                                Route("/v1/completions", self.complete, methods=["POST"]),
                                Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def models(self, _: Request) -> JSONResponse:
        return JSONResponse({"data": [
            {"id": "base", "parent": None, "root": "base", "max_model_len": CONTEXT},
            {"id": "loaded-by-someone-else", "parent": "base", "root": "/elsewhere"}]})

    async def complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        if not self.can_generate.is_set() or body.get("prompt") == "boom":
            return JSONResponse({"detail": f"engine at {self.url} dead"}, status_code=503)
        if body.get("echo"):
            self.held += 1
            await anyio.to_thread.run_sync(self.release.wait)
        return JSONResponse({"id": "c", "object": "text_completion", "created": 1,
                             "model": body["model"], "system_fingerprint": None,
                             "choices": [{"index": 0, "text": "y", "finish_reason": "length",
                                          "logprobs": None, "stop_reason": None}]})

    async def chat(self, request: Request) -> JSONResponse | StreamingResponse:
        """A whole answer, or a stream of three chunks (held after the first while the
        request has ``hold``, an extra field the service passes to vLLM; broken off after the
        first, as when vLLM dies, with ``break``)."""
        body = await request.json()
        self.bodies.append(body)
        head = {"id": "chatcmpl-f", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return JSONResponse({**head, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "hi"},
                "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

        def event(delta: dict, reason: str | None = None) -> str:
            chunk = {**head, "object": "chat.completion.chunk", "choices": [{
                "index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
            return f"data: {json.dumps(chunk)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield event({"role": "assistant", "content": ""})
            if body.get("break"):
                raise RuntimeError("the stand-in dies mid-stream")
            if body.get("fail"):  # vLLM's error event, naming where it runs
                yield f"data: {json.dumps({'error': {'message': f'engine at {self.url} failed', 'code': 500}})}\n\n"
                return
            if body.get("hold"):
                await anyio.to_thread.run_sync(self.release_stream.wait)
            yield event({"content": "hi"})
            yield event({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, FakeVllm]]:
    fake = FakeVllm()
    fake.thread.start()
    wait_for(lambda: fake.server.started, 30, "the stand-in vLLM")
    model = save_tiny_model(tmp_path_factory.mktemp("model"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = CHATML  # the service renders chat to apply the token cap
    tokenizer.save_pretrained(model)
    settings = tiny_settings(tmp_path_factory.mktemp("data"), Path(model), rate_limit=0,
                             vllm_url=fake.url, vllm_poll_s=0.1)
    try:
        with live_service(settings) as server:
            yield server, fake
    finally:
        fake.release.set()
        fake.release_stream.set()
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
    wait_for(lambda: not services.vllm.proxy.serial_busy, what="the lock released")


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
    wait_for(lambda: not proxy.serial_busy, what="the lock released")
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


def data_lines(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def test_answers_and_every_chunk_name_the_version_not_vllms_name(
        stack: tuple[LiveServer, FakeVllm]) -> None:
    """vLLM answers ``v0`` as ``base``: the service answers ``v0``, header and body."""
    server, fake = stack
    fake.can_generate.set()
    chat = {"model": "active", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    raw = api.chat.completions.with_raw_response.create(**chat)
    assert fake.bodies[-1]["model"] == "base" and raw.parse().model == "v0"
    assert raw.headers["x-modeledit-version"] == "v0"
    assert raw.headers["x-modeledit-engine"] == "vllm"
    completion = api.completions.create(model="v0", prompt="x", max_tokens=2)
    assert completion.model == "v0" and completion.choices[0].text == "y"
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**chat, "stream": True},
                      timeout=60) as response:
        assert response.headers["x-modeledit-version"] == "v0"
        assert response.headers["x-modeledit-engine"] == "vllm"
        events = data_lines(response)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert len(chunks) == 3 and {c.model for c in chunks} == {"v0"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hi"


def test_model_cards_are_the_embedded_schema_owned_by_vllm(
        stack: tuple[LiveServer, FakeVllm]) -> None:
    server, _ = stack
    listed = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert listed.headers["x-modeledit-engine"] == "vllm"
    cards = {c["id"]: c for c in listed.json()["data"]}
    one = httpx.get(f"{server.url}/v1/models/active", timeout=30)
    assert one.status_code == 200 and one.headers["x-modeledit-engine"] == "vllm"
    card = openai.types.Model.model_validate(one.json())
    assert card.owned_by == "vllm" and one.json() == cards["active"]
    assert set(one.json()) == {"id", "object", "created", "owned_by", "root", "parent", "state",
                               "active"}
    assert (one.json()["root"], one.json()["active"]) == ("v0", True)
    assert httpx.get(f"{server.url}/v1/models/v9", timeout=30).status_code == 404


def test_the_token_cap_holds_under_vllm(stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    fake.can_generate.set()
    cap = server.services.settings.max_tokens_cap
    sent = len(fake.bodies)
    for path, body, param in [
        ("completions", {"model": "v0", "prompt": "x", "max_tokens": cap + 1}, "max_tokens"),
        ("chat/completions", {"model": "v0", "messages": [{"role": "user", "content": "hi"}],
                              "max_completion_tokens": cap + 1}, "max_completion_tokens"),
    ]:
        over = httpx.post(f"{server.url}/v1/{path}", json=body, timeout=60)
        assert over.status_code == 400, over.text
        assert over.json()["error"]["param"] == param and str(cap) in over.text
    assert len(fake.bodies) == sent, "a request over the cap reached vLLM"
    unbounded = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "model": "v0", "messages": [{"role": "user", "content": "hi"}]})
    assert unbounded.status_code == 200
    assert 0 < fake.bodies[-1]["max_tokens"] <= cap  # vLLM's default (the context) is capped
    # ...and fits vLLM's own context (its max_model_len), not the model's longer one
    assert fake.bodies[-1]["max_tokens"] < CONTEXT


def test_a_stream_vllm_breaks_off_ends_with_an_error_event(
        stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    fake.can_generate.set()
    body = {"model": "v0", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 4, "break": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        events = data_lines(response)
    assert len(events) == 2 and "[DONE]" not in events
    ChatCompletionChunk.model_validate_json(events[0])
    error = json.loads(events[1])["error"]
    assert error["code"] == "vllm_unavailable" and fake.url not in error["message"]
    after = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "model": "v0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert after.status_code == 200  # nothing was left held


def test_a_quiet_stream_is_kept_alive_with_pings(stack: tuple[LiveServer, FakeVllm]) -> None:
    """vLLM holds the stream after its first chunk; the service pings meanwhile."""
    server, fake = stack
    services = server.services
    settings = services.settings
    services.settings = settings.model_copy(update={"sse_ping_s": 0.01})
    fake.release_stream.clear()
    body = {"model": "v0", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "hold": True}
    try:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                          timeout=60) as response:
            lines = response.iter_lines()
            before = until_ping(lines)
            fake.release_stream.set()
            after = [line for line in lines if line.startswith("data: ")]
    finally:
        services.settings = settings
        fake.release_stream.set()
    data = [line for line in before if line.startswith("data: ")] + after
    assert data[-1] == "data: [DONE]" and len(data) == 4


def test_a_streamed_error_event_names_no_internal_url(stack: tuple[LiveServer, FakeVllm]) -> None:
    server, fake = stack
    fake.can_generate.set()
    body = {"model": "v0", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 4, "fail": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      timeout=60) as response:
        events = data_lines(response)
    error = json.loads(events[-1])["error"]
    assert error["message"] == "engine at <vllm> failed" and fake.url not in "".join(events)


def test_a_name_vllm_serves_for_someone_else_is_not_a_model(
        stack: tuple[LiveServer, FakeVllm]) -> None:
    """vLLM may list adapters this service never loaded: they answer as no version (404)."""
    server, fake = stack
    fake.can_generate.set()
    proxy = server.services.vllm.proxy
    wait_for(lambda: "loaded-by-someone-else" in proxy.sync.served_names(),
             what="the sync to see the foreign adapter")
    sent = len(fake.bodies)
    foreign = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "model": "loaded-by-someone-else", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}]})
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "model_not_found"
    assert len(fake.bodies) == sent
