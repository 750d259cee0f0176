"""The one interface the ``/v1`` routes call, whichever engine answers.

Like vLLM's ``entrypoints/openai``: the router is thin and each endpoint has one serving
object; here the serving objects sit behind :class:`OpenAIBackend`, which the app chooses
once at start-up (:func:`app.main.openai_backend`): the embedded batch engine
(:mod:`app.api.openai.embedded`) or vLLM (:mod:`app.vllm.backend`). No route asks which.

Both answer the same shape: validated ``openai`` types whose ``model`` is the version that
answered (``active`` resolved), or a :class:`Stream` of them that
:mod:`app.api.openai.sse` sends as server-sent events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request as HttpRequest
from openai.types.chat import ChatCompletionChunk

from app.api.openai.protocol import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)

VERSION_HEADER = "X-Modeledit-Version"
"""Every answer that generated names the version that did (as its ``model`` does)."""


@dataclass(frozen=True)
class StreamError:
    """An error after the stream started (its status is already sent): one ``data:`` event
    in OpenAI's error shape, then the stream ends without ``[DONE]``."""

    message: str
    code: str


Chunk = CompletionResponse | ChatCompletionChunk


@dataclass
class Stream:
    """A streamed answer: its chunks, each already validated, and how to stop it.

    ``close`` runs once the stream ends, however it ends (finished, client gone, never read):
    it cancels the generation or releases the upstream request. It must be idempotent."""

    version: str
    chunks: AsyncIterator[Chunk | StreamError]
    close: Callable[[], Awaitable[None]]


class OpenAIBackend(Protocol):
    """What answers ``/v1``; raises :class:`app.api.openai.errors.OpenAIError` to refuse."""

    engine: str
    """``embedded`` or ``vllm``: the ``X-Modeledit-Engine`` header and cards' ``owned_by``."""

    async def list_models(self) -> ModelList: ...

    async def get_model(self, model_id: str) -> ModelCard: ...

    async def create_completion(self, body: CompletionRequest,
                                http: HttpRequest) -> CompletionResponse | Stream: ...

    async def create_chat_completion(self, body: ChatRequest,
                                     http: HttpRequest) -> ChatResponse | Stream: ...
