"""``/v1/models`` on the embedded engine (vLLM's ``OpenAIServingModels``): every committed
version is a model, plus ``active`` and the base model's name, and a name resolves to the
committed version that answers for it."""

from __future__ import annotations

from app.api.openai.cards import answering_version, find_card, version_cards
from app.api.openai.protocol import ModelCard, ModelList
from app.api.openai.serving import ENGINE, engine_of
from app.services import Services


class ServingModels:
    """The cards, and which committed version a request's ``model`` means now."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def cards(self) -> list[ModelCard]:
        return version_cards(self.services.parts, self.services.runtime.active, ENGINE)

    def list(self) -> ModelList:
        return ModelList(object="list", data=self.cards())

    def get(self, model_id: str) -> ModelCard:
        return find_card(self.cards(), model_id)

    def resolve(self, name: str) -> str:
        """The committed version ``name`` means now; 404 in OpenAI's terms otherwise."""
        services = self.services
        version = engine_of(services.parts).resolve(name)
        if name == services.parts.lm.name:
            version = services.runtime.base_id
        return answering_version(services.store, name, version)
