"""What a job asks the worker to do, as types: one model per ``kind``.

The store keeps a job's payload as the JSON the API wrote (unchanged since the payloads were
plain dicts, so old rows still parse); :func:`parse_payload` turns it into one of these when a
job is handed to the worker, and the worker dispatches on the type. A payload that does not
parse fails its job with :class:`InvalidPayload`'s message instead of a ``KeyError`` deep in a
handler.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "EditJob",
    "EvaluateJob",
    "InvalidPayload",
    "JobPayload",
    "RevertJob",
    "parse_payload",
]


class _Payload(BaseModel):
    # extra keys are ignored: a row written by a newer API must not fail on an older worker
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_json(self) -> dict[str, Any]:
        """The dict the store persists (and hashes for idempotency keys)."""
        return self.model_dump(mode="json")


class EditJob(_Payload):
    """Write ``facts`` into the active version with ``method`` (the worker's default if None).

    ``facts`` stay raw records here: :func:`app.worker.handlers.requests_from_facts` validates them and names the
    bad fact, which is the message users have always seen."""

    kind: Literal["edit"] = "edit"
    facts: list[Any] = Field(default_factory=list)
    method: str | None = None
    gate: dict[str, float | None] | None = None
    """Per-request quality-gate thresholds (``min_efficacy``, ``max_kl``,
    ``min_chat_efficacy``); see app/worker/gate.py."""
    strength: str | None = None
    covariance_weight: float | None = Field(
        None, validation_alias=AliasChoices("covariance_weight", "mom2_update_weight"),
        serialization_alias="mom2_update_weight")
    """The batch's explicit λ; see app/worker/strength.py. Stored under its older name
    ``mom2_update_weight``: the idempotency hash over a stored payload stays the same, and
    rows written before the rename read back."""

    def to_json(self) -> dict[str, Any]:
        """Options the request did not use are left out, so a job's stored JSON (and the
        idempotency hash over it) is what it was before these options existed."""
        data = self.model_dump(mode="json", by_alias=True)
        for key in ("gate", "strength", "mom2_update_weight"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class RevertJob(_Payload):
    """Drop ``version`` from the active lineage, recomputing the batches after it."""

    kind: Literal["revert"] = "revert"
    version: str


class EvaluateJob(_Payload):
    """Metrics of ``version`` against its parent on its own facts, ``records`` and/or the
    first ``limit`` records of ``data_file`` (relative to the shared data directory)."""

    kind: Literal["evaluate"] = "evaluate"
    version: str
    include_own_facts: bool = True
    records: list[Any] = Field(default_factory=list)
    data_file: str | None = None
    limit: int | None = None


JobPayload = Annotated[EditJob | RevertJob | EvaluateJob, Field(discriminator="kind")]
KINDS = ("edit", "revert", "evaluate")
_ADAPTER: TypeAdapter[EditJob | RevertJob | EvaluateJob] = TypeAdapter(JobPayload)


class InvalidPayload(ValueError):
    """A stored payload that is no known job; the message is the job's failure reason."""


def parse_payload(payload: dict[str, Any] | None) -> EditJob | RevertJob | EvaluateJob:
    """The typed job of a stored payload; a payload without ``kind`` is an edit (the oldest
    rows have none)."""
    data = {"kind": "edit", **(payload or {})}
    kind = data["kind"]
    if kind not in KINDS:
        raise InvalidPayload(f"unknown job kind {kind!r}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'payload'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidPayload(f"invalid {kind} job: {problems}") from exc
