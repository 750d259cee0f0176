"""Checks on a batch of facts that need more than one fact or the model's tokenizer.

The schema (:mod:`app.api.schemas.edits`) refuses what one field alone can show, in characters:
cheap, and before anything is tokenized. What costs the editor work is tokens, not characters (a
subject of 2,000 emoji is thousands of tokens), and whether a batch is coherent is a property of
the batch: both are checked here, in the API, before a job is accepted, so a client learns at
once which field to fix instead of from a failed job minutes later.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request

from app.api.errors import ApiError
from app.store.ledger import fact_key

__all__ = ["TokenLimits", "check_tokens", "dedupe_facts", "fact_texts", "get_tokenizer", "limits_of"]


class Tokenizer(Protocol):
    """What is used of a Hugging Face tokenizer: batch encoding to ids."""

    def __call__(self, text: list[str], add_special_tokens: bool = ...) -> Any: ...


@dataclass(frozen=True)
class TokenLimits:
    """Token bounds of one batch (``Settings.max_text_tokens`` etc.)."""

    text: int
    """Any one text field of a fact (one paraphrase, one neighborhood prompt, the subject...)."""
    fact: int
    """All text fields of one fact together."""
    batch: int
    """All text fields of all facts of one batch together."""


def _as_dict(fact: Any) -> dict[str, Any]:
    return fact if isinstance(fact, dict) else fact.model_dump(exclude_none=True)


def dedupe_facts(facts: Sequence[Any], field: str = "facts") -> list[int]:
    """The indices of ``facts`` to keep: the first copy of a fact given twice.

    Two facts are the same question when the facts ledger says so (subject and prompt trimmed
    and case-folded, :func:`app.store.ledger.fact_key`). The same question with the same
    ``target_new`` is a repeat, kept once; with a different ``target_new`` the batch asks the
    model to believe two answers at once, which no edit can honour: a 422 naming both facts.
    """
    first: dict[tuple[str, str], int] = {}
    keep: list[int] = []
    for index, fact in enumerate(facts):
        data = _as_dict(fact)
        key = fact_key(data)
        if key not in first:
            first[key] = index
            keep.append(index)
            continue
        earlier = first[key]
        old_target = str(_as_dict(facts[earlier]).get("target_new", ""))
        new_target = str(data.get("target_new", ""))
        if old_target.strip() != new_target.strip():
            raise ApiError(
                422,
                f"{field}[{earlier}] and {field}[{index}] contradict each other: the same "
                f"subject {data.get('subject', '')!r} and prompt {data.get('prompt', '')!r} "
                f"with target_new {old_target!r} and {new_target!r}; keep one of them (or "
                "submit them in separate batches: the later one then overrides)",
                field=f"{field}[{index}].target_new",
            )
    return keep


def fact_texts(fact: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(field path within the fact, text)`` for every text field of one fact, as the editor
    and the evaluation read it (targets with the leading space the model sees)."""
    for name in ("subject", "prompt", "question"):
        if fact.get(name):
            yield name, str(fact[name])
    for name in ("target_new", "target_true"):
        if fact.get(name):
            yield name, " " + str(fact[name]).strip()
    for name in ("paraphrase_prompts", "neighborhood_prompts"):
        for position, text in enumerate(fact.get(name) or ()):
            yield f"{name}[{position}]", str(text)


def check_tokens(facts: Sequence[Any], tokenizer: Tokenizer, limits: TokenLimits,
                 field: str = "facts") -> int:
    """Raise a 422 naming the first field over a limit; return the batch's token count.

    Every text of the batch is encoded in one call of the (fast) tokenizer, which takes
    milliseconds for a full batch; texts already passed the schema's character limit.
    """
    where: list[tuple[int, str]] = []
    texts: list[str] = []
    for index, fact in enumerate(facts):
        for name, text in fact_texts(_as_dict(fact)):
            where.append((index, name))
            texts.append(text)
    if not texts:
        return 0
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    per_fact: dict[int, int] = {}
    total = 0
    for (index, name), row in zip(where, ids, strict=True):
        count = len(row)
        if count > limits.text:
            raise ApiError(422, f"{field}[{index}].{name} is {count} tokens long; at most "
                           f"{limits.text} tokens per text (MODELEDIT_MAX_TEXT_TOKENS)",
                           field=f"{field}[{index}].{name}")
        per_fact[index] = per_fact.get(index, 0) + count
        if per_fact[index] > limits.fact:
            raise ApiError(422, f"{field}[{index}] has more than {limits.fact} tokens in its "
                           "texts together (MODELEDIT_MAX_FACT_TOKENS); give it fewer or "
                           "shorter paraphrase/neighborhood prompts", field=f"{field}[{index}]")
        total += count
        if total > limits.batch:
            raise ApiError(422, f"{field} has more than {limits.batch} tokens in all its texts "
                           f"together (MODELEDIT_MAX_BATCH_TOKENS; over it at {field}[{index}]); "
                           "split the batch into several jobs", field=field)
    return total


def limits_of(settings: Any) -> TokenLimits:
    """The operator's token limits (``MODELEDIT_MAX_{TEXT,FACT,BATCH}_TOKENS``)."""
    return TokenLimits(settings.max_text_tokens, settings.max_fact_tokens,
                       settings.max_batch_tokens)


def get_tokenizer(request: Request) -> Tokenizer:
    """FastAPI dependency: the tokenizer of the model the API process loaded (the one the
    worker edits, so a count here is the count the editor sees); an API process without the
    model loads the tokenizer alone, once, from the model's cached files."""
    services = request.app.state.services
    lm = getattr(getattr(services, "parts", None), "lm", None)
    if lm is not None:
        return lm.tokenizer
    return _tokenizer_only(services.settings.model)


@functools.lru_cache(maxsize=2)
def _tokenizer_only(model: str) -> Tokenizer:
    """Megabytes and milliseconds where the model is gigabytes: AutoTokenizer on the same
    files :func:`models.load.load_model` reads."""
    from transformers import AutoTokenizer

    from models.load import resolve

    return AutoTokenizer.from_pretrained(resolve(model)[1])
