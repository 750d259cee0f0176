"""Bodies of ``/score``, ``/generate`` and ``/next-tokens``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import (
    MAX_CANDIDATES,
    MAX_NEW_TOKENS,
    MAX_TOP_K,
    ApiModel,
    FactText,
    QueryText,
    VersionId,
)


class ScoreIn(ApiModel):
    prompt: QueryText
    candidates: list[FactText] = Field(
        min_length=1, max_length=MAX_CANDIDATES
    )
    version: VersionId | None = Field(None, description="default: the active version")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "prompt": "The mother tongue of Danielle Darrieux is",
                "candidates": ["English", "French"],
            }
        },
    )


class CandidateScore(BaseModel):
    candidate: str
    logprob: float = Field(description="sum of the candidate's token log-probs after the prompt")
    tokens: int = Field(description="number of tokens of ' ' + candidate")


class ScoreOut(BaseModel):
    version: str
    scores: list[CandidateScore]

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "version": "v2",
                "scores": [
                    {"candidate": "English", "logprob": -0.4, "tokens": 1},
                    {"candidate": "French", "logprob": -3.1, "tokens": 1},
                ],
            }
        }
    )


class GenerateIn(ApiModel):
    prompt: QueryText
    max_new_tokens: int = Field(20, ge=1, le=MAX_NEW_TOKENS)
    version: VersionId | None = Field(None, description="default: the active version")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"prompt": "The mother tongue of Danielle Darrieux is", "max_new_tokens": 8}
        },
    )


class GenerateOut(BaseModel):
    version: str
    text: str = Field(description="the continuation only (greedy decoding)")

    model_config = ConfigDict(
        json_schema_extra={"example": {"version": "v2", "text": " English."}}
    )


class NextTokensIn(ApiModel):
    prompt: QueryText
    k: int = Field(10, ge=1, le=MAX_TOP_K)
    version: VersionId | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"prompt": "The mother tongue of Danielle Darrieux is",
                                       "k": 5}},
    )


class TokenProb(BaseModel):
    token: str
    id: int
    logprob: float
    prob: float


class NextTokensOut(BaseModel):
    version: str
    tokens: list[TokenProb]

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "version": "v2",
                "tokens": [{"token": " English", "id": 3929, "logprob": -0.4, "prob": 0.67}],
            }
        }
    )


