"""Turn edit requests into tokenised rows: one per (request, context prefix)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from editing.forward.tokens import continuation_ids, fact_token_index, prompt_ids, subject_span
from editing.requests import EditRequest
from editing.targets.templates import question_prefix

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

    ``prompt`` overrides each request's own prompt (e.g. the essence prompt)."""
    rows = []
    for index, request in enumerate(requests):
        for prefix in prefixes:
            text, end = subject_span(prompt or request.prompt, request.subject, prefix)
            target = continuation_ids(tokenizer, text, request.target_new) if with_target else []
            rows.append(FactRow(prompt_ids(tokenizer, text), fact_token_index(tokenizer, text, end), index, target))
    return rows


def encode_essence(tokenizer: PreTrainedTokenizerBase, requests: Sequence[EditRequest]) -> list[FactRow]:
    return encode_requests(tokenizer, requests, [""], prompt=ESSENCE_PROMPT, with_target=False)


NAME_CONTEXT = "{subject}. {text}"
"""A first mention of the subject, then the request's sentence naming it again."""


NAME_QUESTION = "What do you know about {}?"
"""The user's message of the ``"chat"`` name context: it names the subject, and it is not a
record's question, so the evaluation's name-integrity context stays one no edit is computed on."""


def _name_context(tokenizer: PreTrainedTokenizerBase, request: EditRequest, context: str) -> tuple[str, int, int]:
    """``(head, end of the first mention, start of the sentence)``; the sentence follows ``head``."""
    first = request.subject
    if context == "chat":
        head = question_prefix(tokenizer, NAME_QUESTION.format(first))
        return head, head.rindex(first) + len(first), len(head)
    head = NAME_CONTEXT.format(subject=first, text="")
    return head, len(first), len(head)


def encode_names(
    tokenizer: PreTrainedTokenizerBase, requests: Sequence[EditRequest], context: str = "sentence"
) -> list[FactRow]:
    """Per request, a row where the subject is mentioned, then written again: ``fact`` is the
    first mention's last token (where z's offset goes), ``target`` the second mention's tokens
    and ``ids`` end with them. Keeping the model's predictions of those tokens is what keeps
    the name intact where a user's question names the subject and the answer repeats it
    (docs/results/chat.md: the update fires at the earlier mention's fact token).

    ``context`` (``EditHparams.name_context``): ``"sentence"`` mentions the bare name before
    the sentence; ``"chat"`` asks :data:`NAME_QUESTION` in the chat template and has the
    assistant write the sentence, as in the context where names were measured to break."""
    rows = []
    for index, request in enumerate(requests):
        first = request.subject
        head, first_end, start = _name_context(tokenizer, request, context)
        text = head + request.text
        fact = fact_token_index(tokenizer, text, first_end)
        at = start + request.prompt.index("{}")
        end = at + len(first)
        ids = prompt_ids(tokenizer, text[:end])
        before = prompt_ids(tokenizer, text[:at].rstrip(" "))
        name = ids[len(before):] if ids[: len(before)] == before else ids[-1:]
        rows.append(FactRow(ids, fact, index, name))
    return rows
