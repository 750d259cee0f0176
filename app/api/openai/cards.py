"""The one model-card schema of ``/v1/models``, whichever backend lists it: every committed
version (held ones too), then ``active`` and the base model's name as aliases; and which
version a requested model name answers as, with the same refusals under both backends."""

from __future__ import annotations

from datetime import datetime

from app.api.openai.errors import OpenAIError
from app.api.openai.protocol import ModelCard
from app.serving.parts import ModelParts
from app.store import NotFound, VersionStore


def created_at(stamp: str) -> int:
    """A version's ``created_at`` as the Unix time OpenAI's cards carry (0 if unreadable)."""
    try:
        return int(datetime.fromisoformat(stamp).timestamp())
    except (TypeError, ValueError):
        return 0


def version_cards(parts: ModelParts, active: str, owned_by: str) -> list[ModelCard]:
    """The cards, ``active`` naming the version the alias means now for this backend."""
    store = parts.store
    cards = [ModelCard(id=v.id, object="model", created=created_at(v.created_at),
                       owned_by=owned_by, root=v.id, parent=v.parent, state=v.shown_state,
                       active=v.id == active)
             for v in store.list_versions() if v.state == "committed"]
    by_id = {c.id: c for c in cards}
    for alias, target in (("active", active), (parts.lm.name, parts.runtime.base_id)):
        if target in by_id and alias not in by_id:
            cards.append(by_id[target].model_copy(update={"id": alias}))
    return cards


def find_card(cards: list[ModelCard], model_id: str) -> ModelCard:
    """The card named ``model_id``; 404 in OpenAI's terms otherwise."""
    for card in cards:
        if card.id == model_id:
            return card
    raise OpenAIError(404, f"The model '{model_id}' does not exist", "model", "model_not_found")


def answering_version(store: VersionStore, name: str, version: str) -> str:
    """``version`` (what the requested ``name`` means now) if it is committed and so can
    answer; otherwise a 404 in OpenAI's terms, the same under both backends."""
    try:
        record = store.get_version(version)
    except NotFound as exc:
        raise OpenAIError(404, f"The model '{name}' does not exist; GET /v1/models lists "
                          "the versions", "model", "model_not_found") from exc
    if record.state != "committed":
        raise OpenAIError(404, f"The model '{name}' is a {record.state} version, which "
                          "cannot answer; ask a committed one", "model", "model_not_found")
    return version
