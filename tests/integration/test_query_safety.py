"""Queries a busy or hostile client sends, through real HTTP against the real service (uvicorn,
real Redis, the batch engine on a tiny model): the in-flight leak of issue 32, answers that
follow the ``openai`` SDK's retry contract, request ids, and handlers that hold no thread.

Where a test needs requests to stay in flight, it holds the runtime's write lock (each engine
step takes the read lock) and proceeds on observed state (the engine's in-flight count).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from app.api.openai.serving_models import ServingModels
from tests.e2e.harness import save_tiny_model, wait_for
from tests.integration.service_support import LiveServer, live_service, tiny_settings
from tests.integration.test_openai_api import CHATML

LEAK = {"model": "active", "prompt": ["", "x"], "n": 16, "max_tokens": 1}
BOUND = 64
STRICT = ("{% for m in messages %}{% if loop.index0 > 0 and m['role'] == "
          "messages[loop.index0 - 1]['role'] %}{{ raise_exception('Conversation roles must "
          "alternate') }}{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>"
          "\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = save_tiny_model(tmp_path_factory.mktemp("chat-model"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    mp = pytest.MonkeyPatch()
    mp.setenv("MODELEDIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    settings = tiny_settings(tmp_path_factory.mktemp("data"), Path(path), rate_limit=0,
                             generate_queue=BOUND, max_body_bytes=4096)
    with live_service(settings) as server:
        yield server
    mp.undo()


def v1(server: LiveServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/{path}", json=body, timeout=60)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]
    return error


def test_prompts_without_tokens_are_400_and_leak_nothing(service: LiveServer) -> None:
    engine = service.services.engine
    for _ in range(BOUND // 32 * 4):  # several times what once filled the bound for good
        response = v1(service, "completions", LEAK)
        error = assert_openai_error(response, 400)
        assert "prompt[0]" in error["message"] and error["param"] == "prompt"
        assert response.headers["x-should-retry"] == "false"
    assert engine.in_flight == 0
    empty_ids = v1(service, "completions", {"model": "active", "prompt": [[1], []]})
    assert_openai_error(empty_ids, 400)
    answer = v1(service, "completions", {"model": "active", "prompt": "x", "max_tokens": 2,
                                          "n": 16})
    assert answer.status_code == 200 and len(answer.json()["choices"]) == 16
    native = httpx.post(f"{service.url}/generate", json={"prompt": "x", "max_new_tokens": 2},
                        timeout=60)
    assert native.status_code == 200
    assert httpx.post(f"{service.url}/generate", json={"prompt": ""}).status_code == 422
    assert engine.in_flight == 0


def test_what_can_never_fit_is_400_naming_the_limit(service: LiveServer) -> None:
    api = openai.OpenAI(base_url=service.url + "/v1", api_key="any", max_retries=3)
    with pytest.raises(openai.BadRequestError) as caught:  # one answer, not four
        api.completions.create(model="active", prompt=["x"] * 5, n=16, max_tokens=1)
    response = caught.value.response
    assert f"at most {BOUND}" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"
    cap = service.services.settings.max_tokens_cap
    over = v1(service, "completions", {"model": "active", "prompt": "x",
                                        "max_tokens": cap + 1})
    assert str(cap) in assert_openai_error(over, 400)["message"]
    missing = v1(service, "completions", {"model": "v404", "prompt": "x"})
    assert assert_openai_error(missing, 404)["code"] == "model_not_found"
    assert missing.headers["x-should-retry"] == "false"


def test_a_full_queue_is_429_with_retry_after_and_nothing_starves(service: LiveServer) -> None:
    """More waiting queries than FastAPI's 40 pool threads: were a handler to hold a thread
    while it waits, they would never all reach the engine, and /health would not answer."""
    services = service.services
    engine = services.engine
    clients = 48
    httpx.get(f"{service.url}/ready", timeout=30)  # its weights digest computed (the read lock)
    with ThreadPoolExecutor(clients + 1) as pool, services.runtime.exclusive(services.runtime.base_id):
        waiting = [pool.submit(httpx.post, f"{service.url}/generate",
                               json={"prompt": "x", "max_new_tokens": 2}, timeout=120)
                   for _ in range(clients)]
        wait_for(lambda: engine.in_flight == clients, what="every query in the engine")
        health = httpx.get(f"{service.url}/health", timeout=30)
        assert health.status_code == 200 and health.headers["x-request-id"]
        assert httpx.get(f"{service.url}/ready", timeout=30).status_code in (200, 503)
        filler = pool.submit(v1, service, "completions", {
            "model": "active", "prompt": "x", "max_tokens": 1, "n": BOUND - clients})
        wait_for(lambda: engine.in_flight == BOUND or filler.done(), what="the bound reached")
        assert not filler.done(), filler.result().text
        full = v1(service, "completions", {"model": "active", "prompt": "x", "max_tokens": 1})
        assert assert_openai_error(full, 429)["type"] == "rate_limit_error"
        assert int(full.headers["retry-after"]) >= 1
        assert "x-should-retry" not in full.headers
        native = httpx.post(f"{service.url}/generate", json={"prompt": "x"}, timeout=30)
        assert native.status_code == 429 and int(native.headers["retry-after"]) >= 1
    assert [f.result().status_code for f in waiting] == [200] * clients
    assert filler.result().status_code == 200
    wait_for(lambda: engine.in_flight == 0, what="the in-flight count back at zero")


def test_the_deadline_is_504_and_frees_the_rows(service: LiveServer) -> None:
    services = service.services
    settings = services.settings
    services.settings = settings.model_copy(update={"query_timeout_s": 0.5})
    try:
        with services.runtime.exclusive(services.runtime.base_id):  # no answer can come
            late = v1(service, "chat/completions", {
                "model": "active", "messages": [{"role": "user", "content": "hi"}], "n": 4})
            native = httpx.post(f"{service.url}/generate", json={"prompt": "x"}, timeout=60)
        assert assert_openai_error(late, 504)["code"] == "timeout"
        assert native.status_code == 504 and "deadline" in native.json()["detail"]
    finally:
        services.settings = settings
    wait_for(lambda: services.engine.in_flight == 0, what="the in-flight count back at zero")


def test_request_ids_and_error_shapes_on_every_answer(service: LiveServer,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        mine = httpx.get(f"{service.url}/health", headers={"x-request-id": "abc-123"})
        # the line is written once the answer is sent: wait for it, not for a time
        wait_for(lambda: any("/health" in r.getMessage() and "request_id=abc-123"
                             in r.getMessage() for r in caplog.records
                             if r.name == "app.access"), 30, "the access log line")
    assert mine.headers["x-request-id"] == "abc-123"
    odd = httpx.get(f"{service.url}/health", headers={"x-request-id": "<script>"})
    assert odd.headers["x-request-id"] != "<script>"
    too_big = v1(service, "completions", {"model": "active", "prompt": "x" * 5000})
    assert assert_openai_error(too_big, 413)["code"] == "request_too_large"
    native_big = httpx.post(f"{service.url}/generate", json={"prompt": "x" * 5000})
    assert native_big.status_code == 413 and "detail" in native_big.json()
    assert native_big.headers["x-request-id"]

    def broken(*_: object) -> None:
        raise RuntimeError("/secret/path/to/data")

    monkeypatch.setattr(ServingModels, "cards", broken)
    failed = httpx.get(f"{service.url}/v1/models")
    error = assert_openai_error(failed, 500)
    assert "/secret" not in failed.text and error["type"] == "server_error"


def test_template_errors_are_400_and_names_are_accepted(service: LiveServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    named = v1(service, "chat/completions", {"model": "active", "max_tokens": 2, "messages": [
        {"role": "user", "content": "hi", "name": "alice"}]})
    assert named.status_code == 200, named.text
    monkeypatch.setattr(service.services.parts.lm.tokenizer, "chat_template", STRICT)
    refused = v1(service, "chat/completions", {"model": "active", "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
    error = assert_openai_error(refused, 400)
    assert "alternate" in error["message"] and error["param"] == "messages"
    assert refused.headers["x-should-retry"] == "false"


def test_draining_finishes_what_runs_and_refuses_the_rest(service: LiveServer) -> None:
    """What SIGTERM starts (app.cli): last of this service's tests, the engine stays down."""
    services = service.services
    engine = services.engine
    with ThreadPoolExecutor(1) as pool, services.runtime.exclusive(services.runtime.base_id):
        running = pool.submit(httpx.post, f"{service.url}/generate",
                              json={"prompt": "x", "max_new_tokens": 2}, timeout=120)
        wait_for(lambda: engine.in_flight == 1, what="the query in the engine")
        engine.drain(3600)
        ready = httpx.get(f"{service.url}/ready", timeout=30)
        assert ready.status_code == 503 and "stopping" in ready.json()["detail"]
        refused = v1(service, "completions", {"model": "active", "prompt": "x",
                                               "max_tokens": 1})
        error = assert_openai_error(refused, 503)
        assert error["code"] == "service_stopping" and "stopping" in error["message"]
        assert refused.headers["retry-after"]
        native = httpx.post(f"{service.url}/generate", json={"prompt": "x"}, timeout=30)
        assert native.status_code == 503 and native.headers["retry-after"]
    assert running.result().status_code == 200  # within the grace: answered
    engine.stop()
    assert engine.in_flight == 0


def test_one_caller_cannot_take_every_row(tmp_path: Path, service: LiveServer) -> None:
    """Two queries per caller; behind a trusted proxy, each forwarded address is a caller."""
    model = service.services.settings.model
    settings = tiny_settings(tmp_path, Path(model), max_queries_per_caller=2,
                             trusted_proxies="127.0.0.1")
    with live_service(settings) as server, ThreadPoolExecutor(4) as pool:
        services = server.services
        engine = services.engine

        def generate(forwarded: str | None = None) -> httpx.Response:
            headers = {"x-forwarded-for": forwarded} if forwarded else {}
            return httpx.post(f"{server.url}/generate", json={"prompt": "x"}, headers=headers,
                              timeout=120)

        with services.runtime.exclusive(services.runtime.base_id):
            held = [pool.submit(generate) for _ in range(2)]
            wait_for(lambda: engine.in_flight == 2, what="two queries in the engine")
            third = generate()
            assert third.status_code == 429 and third.headers["retry-after"] == "1"
            assert "MODELEDIT_MAX_QUERIES_PER_CALLER" in third.json()["detail"]
            refused = v1(server, "completions", {"model": "active", "prompt": "x"})
            assert assert_openai_error(refused, 429)["code"] == "too_many_concurrent_requests"
            other = pool.submit(generate, "203.0.113.7")  # another client behind the proxy
            wait_for(lambda: engine.in_flight == 3, what="the other caller admitted")
        assert [f.result().status_code for f in [*held, other]] == [200] * 3
        assert generate().status_code == 200  # the caller's slots came back
