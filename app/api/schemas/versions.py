"""Bodies of ``/versions``: lineage, one version's record, rollback, evaluation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import MAX_EVAL_RECORDS, ApiModel
from app.api.schemas.edits import Fact


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
    hparams: dict[str, Any] | None = Field(
        None, description="the settings it was computed with, under their public names "
        "(EditHparams.to_dict: method settings flat, the sub-configurations z, chat and "
        "nullspace nested; the stored form is translated when read)")
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
                "hparams": {"layers": [4, 5, 6, 7, 8], "method": "fe",
                            "covariance_weight": 2000.0, "z_lr": 0.1, "z_steps": 35,
                            "chat": {"name_kl_factor": 0.0, "name_context": "sentence"}},
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

