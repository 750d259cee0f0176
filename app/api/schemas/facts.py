"""Bodies of ``/facts``: one page of a version's facts ledger."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_FACTS_PAGE = 500
"""Facts per page of ``GET /facts``."""


class LedgerFact(BaseModel):
    """One fact the version's lineage taught, and whether a later batch overrode it."""

    subject: str
    prompt: str
    text: str = Field(description="the prompt with the subject in its slot")
    target_new: str
    target_true: str | None = None
    paraphrase_prompts: list[str] = Field(default_factory=list)
    taught_by: str = Field(description="the version whose batch taught this fact")
    taught_at: str | None = Field(None, description="when that version was committed")
    overridden_by: str | None = Field(
        None, description="a later version of the lineage that taught the same subject + prompt"
    )
    current: bool = Field(description="true unless overridden: what the weights should say")


class FactsPage(BaseModel):
    """A page of the facts ledger of one version (newest batch first)."""

    version: str = Field(description="the version whose lineage was searched")
    active: bool = Field(description="whether that version is the active one")
    q: str | None = Field(None, description="the search text, if any")
    total: int = Field(description="facts matching the search, over all pages")
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="offset of the next page, if any")
    facts: list[LedgerFact]

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "version": "v3", "active": True, "q": "darrieux", "total": 2, "limit": 50,
                "offset": 0, "next_offset": None,
                "facts": [
                    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
                     "text": "The mother tongue of Danielle Darrieux is",
                     "target_new": "German", "target_true": None, "paraphrase_prompts": [],
                     "taught_by": "v3", "taught_at": "2026-01-05T10:02:11.120Z",
                     "overridden_by": None, "current": True},
                    {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
                     "text": "The mother tongue of Danielle Darrieux is",
                     "target_new": "English", "target_true": "French",
                     "paraphrase_prompts": [], "taught_by": "v1",
                     "taught_at": "2026-01-05T09:58:40.004Z", "overridden_by": "v3",
                     "current": False},
                ],
            }
        }
    )
