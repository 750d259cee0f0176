"""Request and response bodies of the HTTP API (pydantic v2), with OpenAPI examples.

Static bounds (string lengths, list sizes) live here so the OpenAPI schema documents them and
bad input is refused before any work; limits an operator tunes (batch size, body bytes, queue
length) are checked against :class:`app.settings.Settings` in the routers.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from app.store.records import JobState  # the API reports the states the jobs table holds
from app.strength import MOM2_BOUNDS
from editing.methods import method_names
from editing.requests import EditRequest, InvalidEditRequest

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


# -- text checks ----------------------------------------------------------------------------
def _no_control(value: str, allow: str = "") -> str:
    """Refuse control characters and lone surrogates: they are never part of a fact and some
    tokenizers or log lines mishandle them."""
    for position, char in enumerate(value):
        if char in allow:
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cs"):
            raise ValueError(
                f"contains a control or invalid character {char!r} at position {position}; "
                "remove it"
            )
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
VersionId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class ApiModel(BaseModel):
    """Unknown fields are an error: a typo such as ``target`` for ``target_new`` must not pass."""

    model_config = ConfigDict(extra="forbid")


# -- edits --------------------------------------------------------------------------------
class Fact(ApiModel):
    """One fact to write: ``prompt.format(subject)`` should continue with ``" " + target_new``."""

    subject: FactText = Field(description="the entity, as it appears in the prompt")
    prompt: FactText = Field(description="text with exactly one '{}' where the subject goes")
    target_new: FactText = Field(description="the new continuation (a leading space is implied)")
    target_true: FactText | None = Field(None, description="the old answer (evaluation only)")
    paraphrase_prompts: list[FactText] = Field(
        default_factory=list, max_length=MAX_PROMPTS, description="kept for evaluation"
    )
    neighborhood_prompts: list[FactText] = Field(
        default_factory=list, max_length=MAX_PROMPTS, description="kept for evaluation"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "subject": "Danielle Darrieux",
                "prompt": "The mother tongue of {} is",
                "target_new": "English",
                "target_true": "French",
            }
        },
    )

    @field_validator("prompt")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        """The subject goes where '{}' is; any other brace would break ``str.format``."""
        count = value.count("{}")
        if count != 1:
            raise ValueError(
                f"must contain exactly one '{{}}' where the subject goes (found {count}), "
                "e.g. 'The mother tongue of {} is'"
            )
        if "{" in value.replace("{}", "") or "}" in value.replace("{}", ""):
            raise ValueError("must not contain braces other than the one '{}' slot")
        return value

    @field_validator("subject")
    @classmethod
    def _plain_subject(cls, value: str) -> str:
        if "{}" in value:
            raise ValueError("must be the entity itself, not a template (remove '{}')")
        return value

    @model_validator(mode="after")
    def _check_request(self) -> Fact:
        """The editing core's own rules, in case they grow stricter than the ones above."""
        try:
            self.to_request().validate()
        except InvalidEditRequest as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_request(self) -> EditRequest:
        return EditRequest(
            subject=self.subject,
            prompt=self.prompt,
            target_new=self.target_new,
            target_true=self.target_true,
            paraphrase_prompts=tuple(self.paraphrase_prompts),
            neighborhood_prompts=tuple(self.neighborhood_prompts),
        )


class GateIn(ApiModel):
    """Quality-gate thresholds of one batch; an omitted one falls back to the service's."""

    min_efficacy: float | None = Field(
        None, ge=0.0, le=100.0, allow_inf_nan=False,
        description="percent of the batch's facts that must succeed on their rewrite prompt",
    )
    max_kl: float | None = Field(
        None, ge=0.0, le=MAX_GATE_KL, allow_inf_nan=False,
        description="largest mean KL(parent ‖ new) in nats on the service's probe prompts",
    )

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"min_efficacy": 90, "max_kl": 0.05}}
    )


class EditSubmit(ApiModel):
    """A batch of facts edited together into one new version."""

    facts: list[Fact] = Field(min_length=1, max_length=MAX_FACTS_HARD)
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="the same key returns the same job instead of creating another",
    )
    method: MethodName | None = Field(
        None, description="edit method (default: the service's, usually fe)"
    )
    gate: GateIn | None = Field(
        None,
        description="quality-gate thresholds for this batch, overriding the service's "
        "(MODELEDIT_GATE_MIN_EFFICACY / MODELEDIT_GATE_MAX_KL); a batch that misses them is "
        "committed but held, not activated",
    )
    strength: Literal["conservative", "default", "strong"] | None = Field(
        None,
        description="how hard to write the facts: conservative / default / strong solve with "
        "3x / 1x / 1/3x the service's mom2_update_weight (λ; larger changes the model less)",
    )
    mom2_update_weight: float | None = Field(
        None, ge=MOM2_BOUNDS[0], le=MOM2_BOUNDS[1], allow_inf_nan=False,
        description=f"an explicit λ for this batch, within [{MOM2_BOUNDS[0]:g}, "
        f"{MOM2_BOUNDS[1]:g}]; not together with strength",
    )

    @model_validator(mode="after")
    def _one_strength(self) -> EditSubmit:
        if self.strength is not None and self.mom2_update_weight is not None:
            raise ValueError("give either strength or mom2_update_weight, not both")
        return self

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "facts": [
                    {
                        "subject": "Danielle Darrieux",
                        "prompt": "The mother tongue of {} is",
                        "target_new": "English",
                    }
                ],
                "idempotency_key": "darrieux-english-1",
            }
        },
    )


class JobAccepted(BaseModel):
    job_id: str
    state: JobState
    created: bool = Field(description="false when an earlier job with this idempotency key exists")

    model_config = ConfigDict(
        json_schema_extra={"example": {"job_id": "j_01J9Z5", "state": "queued", "created": True}}
    )


class Progress(BaseModel):
    stage: str
    fraction: float


class JobOut(BaseModel):
    job_id: str
    kind: str = Field(description="edit, revert or evaluate")
    state: JobState
    version: str | None = Field(description="the version this job committed (when committed)")
    error: str | None = Field(description="why it failed (when failed)")
    progress: Progress | None = None
    target: str | None = Field(None, description="the version a revert/evaluate job acts on")
    n_facts: int = Field(0, description="number of facts in an edit job")
    activated: bool | None = Field(
        None,
        description="edit jobs, once committed: whether the commit made the version active "
        "(false when the quality gate held it; see `gate`)",
    )
    gate: dict[str, Any] | None = Field(
        None, description="edit jobs, once committed: the version's quality-gate figures"
    )
    attempts: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    serving: dict[str, Any] | None = Field(
        None, description="with MODELEDIT_VLLM_URL: whether vLLM serves the version "
        "({engine, model, state: pending|served|unloaded|refused, error})")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "job_id": "j_01J9Z5",
                "kind": "edit",
                "state": "committed",
                "version": "v3",
                "error": None,
                "progress": {"stage": "done", "fraction": 1.0},
                "n_facts": 1,
            }
        }
    )


# -- versions -----------------------------------------------------------------------------
class VersionSummary(BaseModel):
    id: str
    parent: str | None
    state: str = Field(
        description="committed, failed, or held (committed but kept inactive by the quality "
        "gate until an operator rolls back to it)"
    )
    kind: str = Field(description="base, edit or revert")
    active: bool = False
    created_at: str | None = None
    method: str | None = None
    n_facts: int = 0
    sha256: str | None = Field(None, description="sha256 of the delta file")
    job_id: str | None = None
    serving: dict[str, Any] | None = Field(
        None, description="with MODELEDIT_VLLM_URL: whether vLLM serves the version "
        "({engine, model, state: pending|served|unloaded|refused, error})")


class VersionList(BaseModel):
    active: str
    versions: list[VersionSummary]

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "active": "v1",
                "versions": [
                    {"id": "v0", "parent": None, "state": "committed", "kind": "base"},
                    {"id": "v1", "parent": "v0", "state": "committed", "kind": "edit",
                     "active": True, "n_facts": 1},
                ],
            }
        }
    )


class VersionDetail(VersionSummary):
    facts: list[dict[str, Any]] = Field(default_factory=list, description="the facts it edited")
    hparams: dict[str, Any] | None = None
    layer_stats: list[dict[str, Any]] | None = None
    source: dict[str, Any] | None = Field(
        None, description="for versions made by a revert: which version was dropped/replayed"
    )
    error: str | None = None
    diagnostics: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = Field(
        None,
        description="quality-gate figures measured before activation: efficacy and "
        "generalization (percent), logprob_gain, probe kl (nats) and top1_agreement "
        "(percent), thresholds, passed/held, reason, gate_s",
    )
    weights_sha256: str | None = Field(
        None, description="sha256 of every MLP output matrix of this version's weights"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "v1", "parent": "v0", "state": "committed", "kind": "edit",
                "active": True, "method": "fe", "n_facts": 1, "sha256": "5e0f…",
                "facts": [{"subject": "Danielle Darrieux",
                           "prompt": "The mother tongue of {} is", "target_new": "English"}],
                "hparams": {"layers": [4, 5, 6, 7, 8], "strategy": "forward_replay"},
                "layer_stats": [{"layer": 2, "norm": 0.41, "rank": 1, "factored": True}],
                "timings": {"compute_s": 3.2}, "evaluation": None,
                "weights_sha256": "77aa…",
            }
        }
    )


class RollbackOut(BaseModel):
    active: str
    previous: str
    weights_sha256: str | None = None

    model_config = ConfigDict(
        json_schema_extra={"example": {"active": "v0", "previous": "v1"}}
    )


class EvaluateIn(ApiModel):
    """What to evaluate besides the version's own facts."""

    records: list[Fact] = Field(default_factory=list, max_length=MAX_EVAL_RECORDS)
    data_file: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.-]+\.json$",
        description="a CounterFact-style file in the shared data directory, e.g. mcf_dev.json",
    )
    limit: int | None = Field(None, ge=1, le=MAX_EVAL_RECORDS, description="records from data_file")
    include_own_facts: bool = True

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"include_own_facts": True}}
    )


# -- queries ------------------------------------------------------------------------------
class ScoreIn(ApiModel):
    prompt: QueryText
    candidates: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT),
                               AfterValidator(_fact_text)]] = Field(
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


# -- facts ledger and caller -----------------------------------------------------------
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


class WhoAmIOut(BaseModel):
    """What the presented bearer token (or no token) may do here; never the token itself."""

    scopes: list[Literal["read", "write"]] = Field(
        description="read: queries and listings; write: edits, rollback, revert, evaluate, export"
    )
    token: Literal["none", "read", "api", "unknown"] = Field(
        description="which configured token was presented: none, the read token, the api "
        "token, or one that matches neither"
    )
    read_needs_token: bool = Field(description="MODELEDIT_READ_TOKEN is set")
    write_needs_token: bool = Field(description="MODELEDIT_API_TOKEN is set")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"scopes": ["read"], "token": "read", "read_needs_token": True,
                        "write_needs_token": True}
        }
    )


# -- health -------------------------------------------------------------------------------
class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"

    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})


class ReadyOut(BaseModel):
    ready: bool
    model: str
    version: str | None = Field(description="the version this API process serves")
    weights_sha256: str | None = Field(
        description="sha256 of every MLP output matrix it serves (equal across processes)"
    )
    redis: bool
    worker: bool
    queue: int | None = None
    detail: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"ready": True, "model": "smollm2-135m", "version": "v2",
                        "weights_sha256": "9b1c…", "redis": True, "worker": True, "queue": 0,
                        "detail": None}
        }
    )


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
