"""Bodies of ``/edits``: the facts of a batch, its gate and strength, and the job it becomes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.api.schemas.common import (
    MAX_FACTS_HARD,
    MAX_GATE_KL,
    MAX_PROMPTS,
    ApiModel,
    FactText,
    MethodName,
)
from app.store.records import JobState  # the API reports the states the jobs table holds
from editing import EditRequest, InvalidEditRequest, retired_name_error

COVARIANCE_WEIGHT_BOUNDS: tuple[float, float] = (1e2, 1e6)
"""Accepted range of an explicit ``covariance_weight`` (λ; the default model's preset uses
2e3, the other presets 1.5e4)."""


class Fact(ApiModel):
    """One fact to write: ``prompt.format(subject)`` should continue with ``" " + target_new``."""

    subject: FactText = Field(description="the entity, as it appears in the prompt")
    prompt: FactText = Field(description="text with exactly one '{}' where the subject goes")
    target_new: FactText = Field(description="the new continuation (a leading space is implied)")
    target_true: FactText | None = Field(None, description="the old answer (evaluation only)")
    paraphrase_prompts: list[FactText] = Field(
        default_factory=list, max_length=MAX_PROMPTS, description="kept for evaluation"
    )
    question: FactText | None = Field(
        None, description="the fact asked as a person would ask it, answered by target_new "
        "('What is the mother tongue of Danielle Darrieux?'); evaluation asks it in the "
        "model's chat template",
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
            question=self.question,
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
    min_chat_efficacy: float | None = Field(
        None, ge=0.0, le=100.0, allow_inf_nan=False,
        description="percent of the facts with a question whose target_new wins as the "
        "assistant's first words when the question is asked in the model's chat template",
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
        "(MODELEDIT_GATE_MIN_EFFICACY / MODELEDIT_GATE_MAX_KL / MODELEDIT_GATE_MIN_CHAT_EFFICACY); "
        "a batch that misses them is "
        "committed but held, not activated",
    )
    strength: Literal["conservative", "default", "strong"] | None = Field(
        None,
        description="how hard to write the facts: conservative / default / strong solve with "
        "3x / 1x / 1/3x the service's covariance_weight (λ; larger changes the model less)",
    )
    covariance_weight: float | None = Field(
        None, ge=COVARIANCE_WEIGHT_BOUNDS[0], le=COVARIANCE_WEIGHT_BOUNDS[1],
        allow_inf_nan=False,
        description=f"an explicit λ for this batch, within [{COVARIANCE_WEIGHT_BOUNDS[0]:g}, "
        f"{COVARIANCE_WEIGHT_BOUNDS[1]:g}]: how much the statistics of ordinary text weigh "
        "against the new facts (larger changes the model less); not together with strength",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_retired_names(cls, data: Any) -> Any:
        """A name of an earlier version (``mom2_update_weight``) is refused naming the field
        that replaced it, not as a bare unknown field."""
        if isinstance(data, dict) and "mom2_update_weight" in data:
            raise ValueError(retired_name_error("mom2_update_weight"))
        return data

    @model_validator(mode="after")
    def _one_strength(self) -> EditSubmit:
        if self.strength is not None and self.covariance_weight is not None:
            raise ValueError("give either strength or covariance_weight, not both")
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
    state: JobState = Field(description="queued, running, committed, failed or cancelled")
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
    attempts: int = Field(0, description="runs of this job that started; one a crash ended "
                          "counts, one a worker shutdown (SIGTERM) ended does not")
    created_at: str | None = Field(None, description="when the job was submitted")
    updated_at: str | None = None
    submitter: str | None = Field(None, description="who submitted it: the token's name, or a "
                                  "short hash of an unnamed token (never the token)")
    cancel_requested_by: str | None = Field(
        None, description="who cancelled the job (or asked a running job to stop: it stops "
        "at its next step and commits nothing)")
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

