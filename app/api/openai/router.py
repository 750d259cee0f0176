"""The ``/v1`` routes: every committed version is a model; answers come from the batch engine.

Handlers are ``async``: they only tokenize, submit to :class:`app.serving.engine.ServingEngine`
and await its updates, so thousands of waiting clients hold no thread. Each answer's
``model`` (and the ``X-Modeledit-Version`` header) is the version that produced it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.openai import errors
from app.api.openai import logprobs as lp
from app.api.openai import serving as sv
from app.api.openai.errors import OpenAIError
from app.api.openai.protocol import (
    ENGINE_HEADER,
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from app.api.security import require_read
from app.api.waiting import unless_gone
from app.services import Services
from app.serving.engine import STOPPING, ServingEngine
from app.serving.queries import ClientGone, DeadlineExceeded

router = APIRouter(prefix="/v1", tags=["openai"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad values, unknown fields, over-long prompt"},
    401: {"model": ErrorResponse, "description": "a read token is configured and none was sent"},
    403: {"model": ErrorResponse, "description": "the token is not valid for reading"},
    404: {"model": ErrorResponse, "description": "unknown model (version)"},
    429: {"model": ErrorResponse, "description": "the request queue is full; see Retry-After"},
    503: {"model": ErrorResponse, "description": "the service is stopping; see Retry-After"},
    504: {"model": ErrorResponse, "description": "no answer within MODELEDIT_QUERY_TIMEOUT_S"},
}


def _services(request: HttpRequest) -> Services:
    return request.app.state.services


def _refuse_extra(body: CompletionRequest | ChatRequest) -> None:
    """Fields beyond OpenAI's are kept for vLLM (``top_k``, ...), which takes them when the
    service forwards to it; the embedded engine does not, so it names the first and refuses."""
    for name in body.model_extra or {}:
        raise OpenAIError(400, f"{name}: Extra inputs are not permitted (this field is not "
                          "OpenAI's and the embedded engine does not implement it; remove it)",
                          name, "unrecognized_field")


async def _proxied(http: HttpRequest, forwarding: Coroutine[Any, Any, Any]) -> Any:
    """vLLM's answer; a client that leaves first, or the deadline (504), cancels the request
    upstream; while the service stops, new requests are refused (503)."""
    services = _services(http)
    if services.engine is not None and services.engine.draining:
        forwarding.close()
        raise OpenAIError(503, STOPPING, None, "service_stopping", {"Retry-After": "5"})
    try:
        return await unless_gone(http, forwarding, services.settings.query_timeout_s)
    except ClientGone:
        raise OpenAIError(499, "client disconnected") from None
    except DeadlineExceeded as exc:
        raise OpenAIError(504, str(exc), None, "timeout") from exc


def _engine(services: Services) -> ServingEngine:
    if services.engine is None:
        raise OpenAIError(503, "this process has no generation engine", None, "no_engine",
                          {"Retry-After": "5"})
    return services.engine


@router.get("/models", response_model=ModelList, responses=RESPONSES,
            summary="Every committed version as a model, plus `active` and the base's name")
async def list_models(http: HttpRequest, _who: str = Depends(require_read)) -> Any:
    if (vllm := _services(http).vllm) is not None:
        return await vllm.proxy.models()
    return ModelList(data=sv.model_cards(_services(http)))


@router.get("/models/{model_id:path}", response_model=ModelCard, responses=RESPONSES,
            summary="One model (version or alias)")
async def get_model(http: HttpRequest,
                    model_id: str = Path(examples=["active"], description="a version or alias"),
                    _who: str = Depends(require_read)) -> ModelCard:
    for card in sv.model_cards(_services(http)):
        if card.id == model_id:
            return card
    raise OpenAIError(404, f"The model '{model_id}' does not exist", "model", "model_not_found")


@router.post("/completions", response_model=CompletionResponse, responses=RESPONSES,
             summary="Continue a prompt (text or token ids) on any version")
async def completions(body: CompletionRequest, http: HttpRequest,
                      _who: str = Depends(require_read)) -> Any:
    services = _services(http)
    if services.vllm is not None:
        return await _proxied(http, services.vllm.proxy.forward("completions", body))
    engine = _engine(services)
    _refuse_extra(body)
    if body.stream and body.echo:
        raise OpenAIError(400, "echo is not supported with stream: true", "echo", "unsupported")
    prompts = sv._prompts(services, body)
    for p in prompts:
        sv._check_ids(services, p, "prompt")
    max_tokens = sv._budget(services, prompts, body.max_tokens, "max_tokens", "prompt")
    version = sv.resolve_model(services, engine, body.model)
    call = sv.submit(engine, version, prompts, body.n,
                     lambda j: sv._params(body, max_tokens, body.logprobs, body.echo, j))
    headers = {sv.VERSION_HEADER: version, ENGINE_HEADER: sv.ENGINE}
    rid, created = sv.new_id("cmpl"), sv.now()
    tokenizer = services.parts.lm.tokenizer
    if body.stream:
        cursor = lp.StreamCursor(tokenizer, call.requests)

        def chunk(i: int, delta: str, reason: str | None) -> dict[str, Any]:
            logprobs = cursor.completion(i) if body.logprobs is not None else None
            return {"id": rid, "object": "text_completion", "created": created,
                    "model": version, "choices": [{"index": i, "text": delta,
                                                   "finish_reason": reason,
                                                   "logprobs": logprobs}]}

        def final() -> dict[str, Any] | None:
            if not (body.stream_options and body.stream_options.include_usage):
                return None
            return {"id": rid, "object": "text_completion", "created": created,
                    "model": version, "choices": [], "usage": sv.usage(call, prompts)}

        return StreamingResponse(sv.stream_events(call, chunk, final,
                                                  services.settings.query_timeout_s),
                                 media_type="text/event-stream", headers=headers)
    await sv.wait_all(call, http)
    choices = []
    for i, r in enumerate(call.requests):
        prompt = prompts[call.prompt_index[i]]
        head = ""
        if body.echo:
            given = body.prompt if isinstance(body.prompt, str) else (
                body.prompt[call.prompt_index[i]] if isinstance(body.prompt[0], str) else None)
            head = given if isinstance(given, str) else tokenizer.decode(prompt)
        logprobs = None
        if body.logprobs is not None:
            ids = (prompt if body.echo else []) + r.output_ids
            lps = (r.prompt_logprobs if body.echo else []) + r.token_logprobs
            tops = (r.prompt_top_logprobs if body.echo else []) + r.top_logprobs
            logprobs = lp.completion_lists(tokenizer, ids, lps, tops)
        choices.append({"index": i, "text": head + r.text,
                        "finish_reason": sv.finish(r.finish_reason), "logprobs": logprobs})
    content = {"id": rid, "object": "text_completion", "created": created, "model": version,
               "choices": choices, "usage": sv.usage(call, prompts)}
    return JSONResponse(content, headers=headers)


@router.post("/chat/completions", response_model=ChatResponse, responses=RESPONSES,
             summary="Answer a conversation (the model's own chat template) on any version")
async def chat_completions(body: ChatRequest, http: HttpRequest,
                           _who: str = Depends(require_read)) -> Any:
    services = _services(http)
    if services.vllm is not None:
        return await _proxied(http, services.vllm.proxy.forward("chat", body))
    engine = _engine(services)
    _refuse_extra(body)
    prompt = sv.chat_prompt(services, body)
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = sv._budget(services, [prompt], body.limit(), param, "messages")
    version = sv.resolve_model(services, engine, body.model)
    top = (body.top_logprobs or 0) if body.logprobs else None
    call = sv.submit(engine, version, [prompt], body.n,
                     lambda j: sv._params(body, max_tokens, top, False, j))
    headers = {sv.VERSION_HEADER: version, ENGINE_HEADER: sv.ENGINE}
    rid, created = sv.new_id("chatcmpl"), sv.now()
    tokenizer = services.parts.lm.tokenizer
    if body.stream:
        cursor = lp.StreamCursor(tokenizer, call.requests)

        def chunk(i: int, delta: str, reason: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": version, "choices": [{
                        "index": i, "delta": {"content": delta} if delta else {},
                        "finish_reason": reason,
                        "logprobs": cursor.chat(i) if body.logprobs else None}]}

        def final() -> dict[str, Any] | None:
            if not (body.stream_options and body.stream_options.include_usage):
                return None
            return {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": version, "choices": [], "usage": sv.usage(call, [prompt])}

        first = [{"id": rid, "object": "chat.completion.chunk", "created": created,
                  "model": version, "choices": [{"index": i, "delta": {"role": "assistant",
                                                                       "content": ""},
                                                 "finish_reason": None, "logprobs": None}]}
                 for i in range(len(call.requests))]
        return StreamingResponse(sv.stream_events(call, chunk, final,
                                                  services.settings.query_timeout_s, first),
                                 media_type="text/event-stream", headers=headers)
    await sv.wait_all(call, http)
    choices = []
    for i, r in enumerate(call.requests):
        logprobs = None
        if body.logprobs:
            logprobs = {"content": lp.chat_content(tokenizer, r.output_ids, r.token_logprobs,
                                                   r.top_logprobs)}
        choices.append({"index": i, "message": {"role": "assistant", "content": r.text},
                        "finish_reason": sv.finish(r.finish_reason), "logprobs": logprobs})
    content = {"id": rid, "object": "chat.completion", "created": created, "model": version,
               "choices": choices, "usage": sv.usage(call, [prompt])}
    return JSONResponse(content, headers=headers)


def install(app: FastAPI) -> None:
    """Mount the /v1 routes and their OpenAI-shaped errors."""
    app.include_router(router)
    errors.install(app)
