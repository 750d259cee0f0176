"""Turn edit requests into tokenised rows: one per (request, context prefix)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from editing.requests import EditRequest
from editing.tokens import continuation_ids, fact_token_index, prompt_ids, subject_span

ESSENCE_PROMPT = "{} is a"
"""The prompt whose next-token distribution the KL term keeps (what the subject *is*)."""


@dataclass(frozen=True)
class FactRow:
    """One tokenised prompt: its ids, the fact token's index, its request, its target ids."""

    ids: list[int]
    fact: int
    request: int
    target: list[int]


def encode_requests(
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    prefixes: Sequence[str],
    prompt: str | None = None,
    with_target: bool = True,
) -> list[FactRow]:
    """Rows in request-major order (request 0 with every prefix, then request 1, ...).

    ``prompt`` overrides each request's own prompt (e.g. the essence prompt).
    """
    rows = []
    for index, request in enumerate(requests):
        for prefix in prefixes:
            text, end = subject_span(prompt or request.prompt, request.subject, prefix)
            target = continuation_ids(tokenizer, text, request.target_new) if with_target else []
            rows.append(FactRow(prompt_ids(tokenizer, text), fact_token_index(tokenizer, text, end), index, target))
    return rows


def encode_essence(tokenizer: PreTrainedTokenizerBase, requests: Sequence[EditRequest]) -> list[FactRow]:
    return encode_requests(tokenizer, requests, [""], prompt=ESSENCE_PROMPT, with_target=False)
