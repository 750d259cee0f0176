"""The embedded batch engine as the ``/v1`` backend: one serving object per endpoint, as in
vLLM's ``entrypoints/openai`` (models, completions, chat)."""

from __future__ import annotations

from fastapi import Request as HttpRequest

from app.api.openai.backend import Stream
from app.api.openai.protocol import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)
from app.api.openai.serving import ENGINE
from app.api.openai.serving_chat import ServingChat
from app.api.openai.serving_completion import ServingCompletion
from app.api.openai.serving_models import ServingModels
from app.services import Services


class EmbeddedBackend:
    """Answers from this process's :class:`app.serving.engine.ServingEngine`."""

    engine = ENGINE

    def __init__(self, services: Services) -> None:
        self.models = ServingModels(services)
        self.completions = ServingCompletion(services, self.models)
        self.chat = ServingChat(services, self.models)

    async def list_models(self) -> ModelList:
        return self.models.list()

    async def get_model(self, model_id: str) -> ModelCard:
        return self.models.get(model_id)

    async def create_completion(self, body: CompletionRequest,
                                http: HttpRequest) -> CompletionResponse | Stream:
        return await self.completions.create(body, http)

    async def create_chat_completion(self, body: ChatRequest,
                                     http: HttpRequest) -> ChatResponse | Stream:
        return await self.chat.create(body, http)
