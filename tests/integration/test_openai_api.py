"""The /v1 endpoints driven by the official ``openai`` client (sync, async, streaming)
against the real service: uvicorn, real Redis, a real worker committing real edits on the
tiny model (whose tokenizer is given a ChatML chat template here)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from transformers import AutoTokenizer

from tests.e2e.harness import save_tiny_model, wait_for, wait_job
from tests.integration.service_support import (
    LiveServer,
    live_service,
    live_service_with_worker,
    tiny_settings,
)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PROMPT = "The mother tongue of Danielle Darrieux is"
FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English"}
CHAT = [{"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the mother tongue of Danielle Darrieux?"}]



@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = save_tiny_model(tmp_path_factory.mktemp("chat-model"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def service(chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    mp = pytest.MonkeyPatch()
    mp.setenv("MODELEDIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    settings = tiny_settings(tmp_path_factory.mktemp("data"), chat_model, rate_limit=0)
    try:
        with live_service_with_worker(settings) as server:
            yield server
    finally:
        mp.undo()


def client(server: LiveServer, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def complete(api: openai.OpenAI, model: str, **kw) -> openai.types.Completion:  # noqa: ANN003
    return api.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0, **kw)


def target_logprob(api: openai.OpenAI, model: str, target: str = " English") -> float:
    """Teacher-forced log-prob of ``target`` after the prompt (echo + max_tokens 0)."""
    out = api.completions.create(model=model, prompt=PROMPT + target, max_tokens=0, echo=True,
                                 logprobs=0)
    head = len(api.completions.create(model=model, prompt=PROMPT, max_tokens=0, echo=True,
                                      logprobs=0).choices[0].logprobs.tokens)
    return sum(out.choices[0].logprobs.token_logprobs[head:])


def test_models_chat_edit_rollback_with_the_sync_client(service: LiveServer) -> None:
    api = client(service)
    ids = [m.id for m in api.models.list()]
    assert {"v0", "active"} <= set(ids)
    assert api.models.retrieve("active").root == "v0"
    raw = api.chat.completions.with_raw_response.create(model="v0", messages=CHAT,
                                                         max_tokens=8, temperature=0)
    chat_v0 = raw.parse()
    assert chat_v0.model == "v0" and raw.headers["x-modeledit-version"] == "v0"
    assert chat_v0.choices[0].finish_reason in ("stop", "length")
    assert chat_v0.usage.completion_tokens > 0
    before = complete(api, "active")
    lp_before = target_logprob(api, "v0")

    with service.client() as http:
        job = http.post("/edits", json={"facts": [FACT]}).json()["job_id"]
        done = wait_job(http, job, timeout=300)
    assert done["state"] == "committed", done
    version = done["version"]
    wait_for(lambda: api.models.retrieve("active").root == version, what="API follows")
    assert version in [m.id for m in api.models.list()]
    on_new = complete(api, version)
    on_active = complete(api, "active")
    assert on_new.model == on_active.model == version
    assert on_new.choices[0].text == on_active.choices[0].text
    assert target_logprob(api, version) > lp_before + 0.5  # the edit is what answers
    chat_new = api.chat.completions.create(model="active", messages=CHAT, max_tokens=8,
                                           temperature=0)
    assert chat_new.model == version
    assert complete(api, "v0").choices[0].text == before.choices[0].text  # v0 unchanged

    with service.client() as http:
        assert http.post("/versions/v0/rollback").status_code == 200
    after = complete(api, "active")
    assert after.model == "v0" and after.choices[0].text == before.choices[0].text
    assert target_logprob(api, "active") == pytest.approx(lp_before, abs=1e-4)
    metrics = httpx.get(service.url + "/metrics").text
    assert 'modeledit_generation_requests_total{served="active"}' in metrics
    assert f'"{version}"' not in metrics  # no label value per version (tests/integration/test_metrics.py)


def test_async_client_concurrent_mixed_versions(service: LiveServer) -> None:
    api = client(service)
    versions = [m.id for m in api.models.list() if m.id.startswith("v")]
    alone = {v: complete(api, v).choices[0].text for v in versions}

    async def run() -> list[openai.types.Completion]:
        async with openai.AsyncOpenAI(base_url=service.url + "/v1", api_key="none") as aapi:
            return await asyncio.gather(*[
                aapi.completions.create(model=versions[i % len(versions)], prompt=PROMPT,
                                        max_tokens=8, temperature=0) for i in range(12)])

    answers = asyncio.run(run())
    for i, answer in enumerate(answers):
        assert answer.model == versions[i % len(versions)]
        assert answer.choices[0].text == alone[answer.model]


def test_streamed_text_equals_non_streamed_for_the_same_seed(service: LiveServer) -> None:
    api = client(service)
    args = {"model": "v0", "messages": CHAT, "max_tokens": 12, "temperature": 1.0,
            "seed": 1234, "top_p": 0.95}
    whole = api.chat.completions.create(**args)
    chunks = list(api.chat.completions.create(**args, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == \
        whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    again = api.chat.completions.create(**args)
    assert again.choices[0].message.content == whole.choices[0].message.content
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model="v0", prompt=PROMPT, max_tokens=10, temperature=0.8, seed=5, stream=True))
    plain = api.completions.create(model="v0", prompt=PROMPT, max_tokens=10, temperature=0.8,
                                   seed=5).choices[0].text
    assert streamed == plain


def test_streams_carry_logprobs_in_openais_chunk_format(service: LiveServer) -> None:
    """Each chunk carries the log-probs of the tokens it adds; together they are the
    non-streamed answer's, on both endpoints."""
    api = client(service)
    args = {"model": "v0", "messages": CHAT, "max_tokens": 10, "temperature": 1.0,
            "seed": 99, "logprobs": True, "top_logprobs": 2}
    whole = api.chat.completions.create(**args).choices[0].logprobs.content
    streamed = [e for c in api.chat.completions.create(**args, stream=True)
                if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
                for e in c.choices[0].logprobs.content]
    assert len(whole) == 10 and [(e.token, e.logprob) for e in streamed] == \
        [(e.token, e.logprob) for e in whole]
    assert all(len(e.top_logprobs) == 2 for e in streamed)
    plain = api.completions.create(model="v0", prompt=PROMPT, max_tokens=6, temperature=0,
                                   logprobs=1).choices[0]
    chunks = [c.choices[0] for c in api.completions.create(
        model="v0", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=1, stream=True)]
    tokens = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    values = [v for c in chunks if c.logprobs for v in c.logprobs.token_logprobs]
    offsets = [o for c in chunks if c.logprobs for o in c.logprobs.text_offset]
    assert tokens == plain.logprobs.tokens and values == plain.logprobs.token_logprobs
    assert offsets == plain.logprobs.text_offset
    with pytest.raises(openai.BadRequestError) as echo:
        api.completions.create(model="v0", prompt=PROMPT, max_tokens=2, echo=True, stream=True)
    assert echo.value.body["param"] == "echo"


def test_token_id_prompts_echo_and_logprobs_for_scoring(service: LiveServer) -> None:
    api = client(service)
    tokenizer = AutoTokenizer.from_pretrained(service.services.parts.lm.name)
    ids = tokenizer(PROMPT).input_ids
    by_ids = api.completions.create(model="v0", prompt=ids, max_tokens=0, echo=True, logprobs=2)
    by_text = api.completions.create(model="v0", prompt=PROMPT, max_tokens=0, echo=True,
                                     logprobs=2)
    lp = by_ids.choices[0].logprobs
    assert lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(ids)
    assert lp.token_logprobs == by_text.choices[0].logprobs.token_logprobs
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])
    assert by_ids.usage.completion_tokens == 0
    many = api.completions.create(model="v0", prompt=[PROMPT, "Paris is"], max_tokens=3,
                                  temperature=0, n=2)
    assert len(many.choices) == 4 and many.choices[0].text == many.choices[1].text


def test_answers_and_stream_chunks_validate_as_openais_types(service: LiveServer) -> None:
    """Every chunk is OpenAI's chunk type with ``model`` the version that answered; whole
    answers are OpenAI's types as sent (no field they do not define appears as null)."""
    body = {"model": "active", "messages": CHAT, "max_tokens": 6, "temperature": 0}
    version = service.services.runtime.active
    with httpx.stream("POST", service.url + "/v1/chat/completions", timeout=60,
                      json={**body, "stream": True,
                            "stream_options": {"include_usage": True}}) as response:
        assert response.headers["x-modeledit-version"] == version
        assert response.headers["x-modeledit-engine"] == "embedded"
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert {c.model for c in chunks} == {version} and chunks[-1].usage is not None
    whole = httpx.post(service.url + "/v1/chat/completions", json=body, timeout=60)
    answer = ChatCompletion.model_validate(whole.json())
    assert answer.model == version == whole.headers["x-modeledit-version"]
    assert "system_fingerprint" not in whole.json() and whole.json()["choices"][0]["logprobs"] is None
    completion = httpx.post(service.url + "/v1/completions", timeout=60, json={
        "model": "v0", "prompt": PROMPT, "max_tokens": 2})
    assert Completion.model_validate(completion.json()).model == "v0"
    card = httpx.get(service.url + "/v1/models/v0", timeout=30).json()
    assert openai.types.Model.model_validate(card).owned_by == "embedded"
    assert set(card) == {"id", "object", "created", "owned_by", "root", "parent", "state",
                         "active"}


def until_ping(lines: Iterator[str]) -> list[str]:
    """The lines up to and including the first keep-alive comment."""
    seen = []
    for line in lines:
        if line:
            seen.append(line)
        if line.startswith(": ping"):
            return seen
    raise AssertionError(f"the stream ended without a keep-alive ping: {seen}")


def test_a_stream_waiting_for_its_first_token_is_kept_alive(service: LiveServer) -> None:
    """While the engine cannot answer, the stream sends keep-alive pings, then the answer."""
    services = service.services
    settings = services.settings
    services.settings = settings.model_copy(update={"sse_ping_s": 0.01})
    body = {"model": "v0", "messages": CHAT, "max_tokens": 2, "temperature": 0, "stream": True}
    try:
        with contextlib.ExitStack() as hold:
            hold.enter_context(services.runtime.exclusive(services.runtime.base_id))
            with httpx.stream("POST", service.url + "/v1/chat/completions", json=body,
                              timeout=60) as response:
                lines = response.iter_lines()
                before = until_ping(lines)
                hold.close()  # the engine may answer now
                after = [line for line in lines if line.startswith("data: ")]
    finally:
        services.settings = settings
    data = [line for line in before if line.startswith("data: ")] + after
    assert data[-1] == "data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(line[6:]) for line in data[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason


def test_client_that_disconnects_stops_its_generation(service: LiveServer) -> None:
    """``ignore_eos`` makes the generation run its 200 steps unless the disconnect stops it."""
    engine = service.services.engine
    assert engine is not None
    body = {"model": "v0", "prompt": PROMPT, "max_tokens": 200, "temperature": 0,
            "ignore_eos": True}
    full = httpx.post(service.url + "/v1/completions", json=body, timeout=60).json()
    assert full["choices"][0]["finish_reason"] == "length"  # 200 steps if nobody stops it
    steps = engine.batch.steps
    with httpx.Client(base_url=service.url, timeout=30) as http, http.stream(
            "POST", "/v1/completions", json={**body, "stream": True}) as response:
        next(response.iter_lines())
    wait_for(lambda: engine.in_flight == 0, what="generation cancelled")
    assert engine.batch.steps - steps < 150, "the generation ran on after the client left"


def test_errors_in_openai_shape(service: LiveServer) -> None:
    api = client(service)
    with pytest.raises(openai.NotFoundError) as missing:
        complete(api, "v999")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        complete(api, "v0", top_p=0)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "top_p"
    with pytest.raises(openai.BadRequestError) as long:
        api.completions.create(model="v0", prompt="French " * 400, max_tokens=4)
    assert "maximum context length is 256" in long.value.body["message"]
    assert long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as unknown:
        complete(api, "v0", extra_body={"mirostat": 2})
    assert unknown.value.body["param"] == "mirostat" and "mirostat" in str(unknown.value)
    with pytest.raises(openai.BadRequestError) as penalty:
        complete(api, "v0", presence_penalty=0.5)
    assert penalty.value.body["param"] == "presence_penalty"
    with pytest.raises(openai.BadRequestError) as cap:
        complete(api, "v0", extra_body={"max_tokens": 10_000})
    assert "cap" in cap.value.body["message"]
    neutral = api.chat.completions.create(
        model="v0", messages=CHAT, max_completion_tokens=4, temperature=0, presence_penalty=0,
        frequency_penalty=0, user="someone", logit_bias={}, store=False, n=1,
        response_format={"type": "text"})
    assert neutral.choices[0].finish_reason in ("stop", "length")
    with httpx.Client(base_url=service.url) as http:  # the rest of the API keeps its shape
        assert "detail" in http.post("/score", json={"prompt": "x"}).json()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A read-token service on the tiny model without a chat template, queue bound 2."""
    model = save_tiny_model(tmp_path_factory.mktemp("plain-model"))
    settings = tiny_settings(tmp_path_factory.mktemp("guarded"), model, read_token="reader",
                             api_token="writer", generate_queue=2)
    with live_service(settings) as server:
        yield server


def test_auth_queue_bound_and_missing_chat_template(guarded: LiveServer) -> None:
    anonymous = httpx.get(guarded.url + "/v1/models")  # no bearer → 401, OpenAI's shape
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):  # a wrong key is a 401, as in OpenAI's API
        client(guarded, key="wrong").models.list()
    api = client(guarded, key="reader")
    assert "v0" in [m.id for m in api.models.list()]
    assert client(guarded, key="writer").models.list()
    with pytest.raises(openai.BadRequestError) as never:  # 3 rows can never fit a bound of 2
        api.completions.with_raw_response.create(model="v0", prompt=PROMPT, max_tokens=2, n=3)
    assert "at most 2" in never.value.body["message"]
    assert never.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as chat:
        api.chat.completions.create(model="v0", messages=CHAT)
    assert chat.value.body["code"] == "no_chat_template"


def test_evaluation_chat_answer_equals_the_chat_endpoint(service: LiveServer,
                                                         chat_model: Path) -> None:
    """The evaluation's greedy chat answer (editing.evaluate.chat) is what a user of
    /v1/chat/completions gets from the same version: same template, engine and stops."""
    from editing import EditRequest
    from editing.evaluate.chat import NEW_TOKENS, UserView
    from editing.weights.delta import WeightDelta
    from models.load import load_model

    request = EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English",
                          target_true="French",
                          question="What is the mother tongue of Danielle Darrieux?")
    store = service.services.parts.store
    api = client(service)
    committed = [v for v in store.list_versions() if v.state == "committed"]
    assert len(committed) >= 2, "the edit test above makes a version to compare on"
    lm = load_model(str(chat_model), "cpu", None)
    view = UserView(lm.tokenizer)
    for version in (committed[0], committed[-1]):
        chain = store.chain(version.id)
        deltas = [WeightDelta.load(store.delta_file(link)) for link in chain[1:]]
        delta = WeightDelta.combine(deltas) if deltas else None
        ours = view.generated(lm.model, [request], delta)[0]
        served = api.chat.completions.create(
            model=version.id, messages=[{"role": "user", "content": request.question}],
            max_tokens=NEW_TOKENS, temperature=0)
        assert served.model == version.id
        assert ours["chat_answer"] == served.choices[0].message.content, version.id


BLOCK = "hold-the-tokenizer"


@pytest.mark.parametrize("where", ["chat", "native"])
def test_tokenising_a_prompt_does_not_hold_health(service: LiveServer, where: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A long prompt takes a while to tokenise; meanwhile /health must answer. The tokenizer
    is held on an event until /health has answered: on the event loop, it never would."""
    tokenizer = service.services.parts.lm.tokenizer
    entered, release = threading.Event(), threading.Event()

    def hold(original):  # noqa: ANN001, ANN202
        def held(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if BLOCK in str(args[-1] if args else kwargs):
                entered.set()
                release.wait(60)
            return original(*args, **kwargs)
        return held

    if where == "chat":
        monkeypatch.setattr(tokenizer, "apply_chat_template", hold(tokenizer.apply_chat_template))
        path, body = "/v1/chat/completions", {"model": "active", "max_tokens": 2, "messages": [
            {"role": "user", "content": BLOCK}]}
    else:
        call = type(tokenizer).__call__
        monkeypatch.setattr(type(tokenizer), "__call__", hold(call))
        path, body = "/generate", {"prompt": BLOCK, "max_new_tokens": 2}
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(httpx.post, service.url + path, json=body, timeout=120)
        assert entered.wait(60), "the request never reached the tokenizer"
        try:
            assert httpx.get(f"{service.url}/health", timeout=20).status_code == 200
        finally:
            release.set()
        assert asked.result().status_code == 200
