"""The vLLM proxy's own checks and vLLM's start command, without vLLM (tests/e2e/test_vllm.py
runs the real engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.openai.errors import OpenAIError
from app.vllm.process import VllmConfig
from app.vllm.proxy import BadRequest, check_request, needs_serialising, refused, unavailable


@pytest.mark.parametrize("body", [
    {"echo": True, "logprobs": 0},
    {"echo": True, "logprobs": 5},
    {"prompt_logprobs": 1},
])
def test_prompt_logprob_requests_are_serialised(body: dict) -> None:
    assert needs_serialising(body)


@pytest.mark.parametrize("body", [{}, {"echo": True}, {"logprobs": 3}, {"echo": False, "logprobs": 1}])
def test_other_requests_run_concurrently(body: dict) -> None:
    assert not needs_serialising(body)


@pytest.mark.parametrize("kind, body, param", [
    ("chat", [], "body"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ("chat", {"model": "active"}, "messages"),
    ("completions", {"model": "active", "prompt": ""}, "prompt"),
    ("completions", {"model": "v1", "prompt": "x", "stream": "yes"}, "stream"),
])
def test_bad_requests_name_the_field(kind: str, body: object, param: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_request(kind, body)
    assert info.value.param == param


def test_extra_fields_pass_the_check() -> None:
    check_request("completions", {"model": "active", "prompt": "x", "top_k": 5, "stream": True})


def test_unavailable_is_a_503_that_names_vllm_and_says_when_to_retry() -> None:
    error = unavailable("ConnectError at http://127.0.0.1:9/")
    assert error.status == 503 and error.code == "vllm_unavailable"
    assert "vLLM" in error.message and "127.0.0.1" not in error.message
    assert error.headers["Retry-After"]


@pytest.mark.parametrize("text, message, code", [
    ('{"error": {"message": "bad n", "type": "BadRequestError", "param": "n", '
     '"code": "invalid_value"}}', "bad n", "invalid_value"),
    ('{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}',
     "too long", None),
    ('{"detail": "Not Found"}', "Not Found", None),
    ("not json", "not json", None),
])
def test_vllms_refusals_keep_its_message_in_openais_shape(text: str, message: str,
                                                          code: str | None) -> None:
    error = refused(400, text)
    assert (error.status, error.message, error.code) == (400, message, code)


def test_vllm_starts_on_loopback_with_lora_and_a_key_off_the_command_line(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "libiomp5.so").touch()
    config = VllmConfig(python=venv / "bin" / "python", model_dir=tmp_path, served_name="m")
    command, env = config.command(), config.env()
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--enable-lora" in command and command[command.index("--dtype") + 1] == "float32"
    assert config.api_key not in " ".join(command) and env["VLLM_API_KEY"] == config.api_key
    assert env["LD_PRELOAD"].endswith("libiomp5.so")
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert VllmConfig(python=venv, model_dir=tmp_path, served_name="m").api_key != config.api_key


def test_a_request_without_a_model_is_refused_before_anything_is_sent() -> None:
    import asyncio

    from app.vllm.proxy import VllmProxy

    proxy = VllmProxy.__new__(VllmProxy)  # no connection, no sync: nothing may be reached
    with pytest.raises(OpenAIError) as refused_early:
        asyncio.run(proxy.forward("completions", {"model": "", "prompt": "x"}))
    assert refused_early.value.status == 400 and refused_early.value.param == "model"
