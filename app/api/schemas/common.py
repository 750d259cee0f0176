"""What every resource's bodies share: size limits, the text rules, ids, the error body.

Static bounds (string lengths, list sizes) live here so the OpenAPI schema documents them and
bad input is refused before any work; limits an operator tunes (batch size, body bytes, queue
length) are checked against :class:`app.settings.Settings` in the routers.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from editing import method_names

MAX_TEXT = 2000
"""Characters in any one subject, prompt, target or query prompt."""
MAX_PROMPTS = 50
"""Paraphrase or neighborhood prompts per fact."""
MAX_FACTS_HARD = 1000
"""Facts per job the schema accepts at all (``Settings.max_batch`` is usually lower)."""
MAX_CANDIDATES = 32
MAX_NEW_TOKENS = 256
MAX_TOP_K = 100
MAX_EVAL_RECORDS = 2000
MAX_GATE_KL = 100.0
"""Nats; far above any edit worth keeping, low enough to catch a unit mistake."""

MethodName = Literal[method_names()]  # type: ignore[valid-type]
"""The registered edit methods, read from the registry at import: OpenAPI lists them all."""


VERSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
"""A version id as the store writes it (``v0``, ``v12``) or any id an operator gives it."""


# -- text checks ----------------------------------------------------------------------------
def control_character(value: str, allow: str = "") -> str | None:
    """Why ``value`` is refused, or ``None``: control characters and lone surrogates are never
    part of a fact or a query, and some tokenizers or log lines mishandle them. The one rule
    for the bodies here and the query strings of the routers."""
    for position, char in enumerate(value):
        if char not in allow and unicodedata.category(char) in ("Cc", "Cs"):
            return (f"contains a control or invalid character {char!r} at position {position}; "
                    "remove it")
    return None


def _no_control(value: str, allow: str = "") -> str:
    problem = control_character(value, allow)
    if problem is not None:
        raise ValueError(problem)
    return value


def _fact_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return _no_control(value)


def _query_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return _no_control(value, allow="\n\t")


FactText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_fact_text)]
QueryText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_query_text)]
VersionId = Annotated[str, Field(min_length=1, max_length=128, pattern=VERSION_ID_PATTERN)]


class ApiModel(BaseModel):
    """Unknown fields are an error: a typo such as ``target`` for ``target_new`` must not pass."""

    model_config = ConfigDict(extra="forbid")



class ErrorItem(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: ``detail`` says what is wrong and what to do."""

    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "detail": "facts[0].prompt: prompt must contain exactly one '{}' where the "
                "subject goes (found 0)",
                "errors": [{"field": "facts[0].prompt", "message": "..."}],
            }
        }
    )
