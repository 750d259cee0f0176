"""vLLM as the ``/v1`` backend: the same interface and the same answers as the embedded
engine (:mod:`app.api.openai.embedded`), with vLLM generating.

What the embedded engine checks, this checks before anything is forwarded: the service is not
stopping (503), ``max_tokens`` / ``max_completion_tokens`` within ``MODELEDIT_MAX_TOKENS_CAP``
and the context (400 naming the field). vLLM's answers come back through
:class:`app.vllm.proxy.VllmProxy` with ``model`` the version, and are validated here as the
``openai`` types the embedded engine builds; the model cards are the embedded engine's schema
with ``owned_by: vllm``. The query deadline (504) and a client that leaves (the upstream
request is cancelled) hold until vLLM starts answering; a stream then runs under the SSE
layer's disconnect handling.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import httpx
from fastapi import Request as HttpRequest
from openai.types.chat import ChatCompletionChunk
from pydantic import BaseModel, ValidationError

from app.api.openai import serving as sv
from app.api.openai.backend import Chunk, Stream, StreamError
from app.api.openai.cards import find_card, version_cards
from app.api.openai.errors import OpenAIError
from app.api.openai.protocol import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)
from app.api.waiting import unless_gone, watch
from app.serving.engine import STOPPING
from app.serving.parts import ModelParts
from app.serving.queries import ClientGone, DeadlineExceeded
from app.settings import Settings
from app.vllm.adapters import ENGINE
from app.vllm.proxy import Answer, Upstream, VllmProxy, bad_answer, unavailable

log = logging.getLogger(__name__)


class VllmBackend:
    """Answers ``/v1`` from vLLM through the proxy."""

    engine = ENGINE

    def __init__(self, proxy: VllmProxy, parts: ModelParts, settings: Settings) -> None:
        self.proxy = proxy
        self.parts = parts
        self.cap = settings.max_tokens_cap

    # -- models -----------------------------------------------------------------------------
    def _cards(self) -> list[ModelCard]:
        if not self.proxy.sync.up:
            raise unavailable(self.proxy.sync.last_error or "not reachable yet")
        return version_cards(self.parts, self.parts.store.active_version(), ENGINE)

    async def list_models(self) -> ModelList:
        return ModelList(object="list", data=self._cards())

    async def get_model(self, model_id: str) -> ModelCard:
        return find_card(self._cards(), model_id)

    # -- generation -------------------------------------------------------------------------
    async def create_completion(self, body: CompletionRequest,
                                http: HttpRequest) -> CompletionResponse | Stream:
        self._refuse_if_stopping()
        prompts = await sv.prompts_of(self.parts, body)
        request = body.model_dump(exclude_unset=True)
        request["max_tokens"] = sv.budget(self._context(), self.cap, prompts, body.max_tokens,
                                          "max_tokens", "prompt")
        answer = await self._forward(http, self.proxy.forward("completions", request))
        return self._answer(answer, CompletionResponse)

    async def create_chat_completion(self, body: ChatRequest,
                                     http: HttpRequest) -> ChatResponse | Stream:
        self._refuse_if_stopping()
        prompt = await sv.chat_prompt(self.parts, body)
        param = body.limit_param()
        request = body.model_dump(exclude_unset=True)
        request[param] = sv.budget(self._context(), self.cap, [prompt], body.limit(), param,
                                   "messages")
        answer = await self._forward(http, self.proxy.forward("chat", request))
        return self._answer(answer, ChatResponse, ChatCompletionChunk)

    def _context(self) -> int:
        """vLLM's context (``--max-model-len``, often shorter than the model's), else the
        model's own until vLLM has listed it."""
        return self.proxy.sync.context or sv.model_context(self.parts)

    def _refuse_if_stopping(self) -> None:
        engine = self.parts.engine
        if engine is not None and engine.draining:
            raise OpenAIError(503, STOPPING, None, "service_stopping", {"Retry-After": "5"})

    async def _forward(self, http: HttpRequest,
                       forwarding: Coroutine[Any, Any, Answer | Upstream]) -> Answer | Upstream:
        """vLLM's answer; a client that leaves first, or the deadline (504), cancels the
        request upstream."""
        try:
            return await unless_gone(http, forwarding, watch(http).timeout_s)
        except ClientGone:
            raise OpenAIError(499, "client disconnected") from None
        except DeadlineExceeded as exc:
            raise OpenAIError(504, str(exc), None, "timeout") from exc

    def _answer(self, answer: Answer | Upstream, whole: type[BaseModel],
                chunk: type[BaseModel] | None = None) -> Any:
        if isinstance(answer, Upstream):
            return Stream(answer.version, self._chunks(answer, chunk or whole), answer.aclose)
        try:
            return whole.model_validate(answer.body)
        except ValidationError as exc:
            raise bad_answer(f"{exc}") from exc

    async def _chunks(self, upstream: Upstream,
                      kind: type[BaseModel]) -> AsyncIterator[Chunk | StreamError]:
        """vLLM's events as validated chunks; an error event, an event not in OpenAI's shape
        or a connection that breaks mid-stream (vLLM died) ends the stream with one error
        event, so the client is told rather than cut off."""
        try:
            async for event in upstream.events():
                error = event.get("error")
                if error is not None:
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    code = error.get("code") if isinstance(error, dict) else None
                    yield StreamError(str(message or "vLLM failed"),
                                      code if isinstance(code, str) else "engine_error")
                    return
                try:
                    yield kind.model_validate(event)  # type: ignore[misc]
                except ValidationError as exc:
                    bad_answer(f"{exc}")  # logs what vLLM sent
                    yield StreamError("vLLM sent an event that is not in OpenAI's shape",
                                      "bad_upstream_answer")
                    return
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: an event that is not JSON
            log.warning("vLLM's stream broke: %s", type(exc).__name__)
            self.proxy.sync.kick()
            yield StreamError("vLLM, the engine that serves this model, stopped answering; "
                              "retry shortly", "vllm_unavailable")
