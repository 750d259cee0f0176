"""Store records -> response bodies (one place that knows both shapes)."""

from __future__ import annotations

from typing import Any

from app.api.schemas import JobOut, Progress, VersionDetail, VersionSummary
from app.store import Job, Version
from editing import STORED_NAMES, EditHparams


def job_out(job: Job, version: Version | None = None,
            serving: dict[str, Any] | None = None) -> JobOut:
    """``version``: the version an edit job committed, for its gate verdict (else omitted);
    ``serving``: whether vLLM serves it (with MODELEDIT_VLLM_URL)."""
    payload = job.payload or {}
    gate = version.gate if version is not None and version.job_id == job.id else None
    progress = None
    if job.progress and "stage" in job.progress:
        progress = Progress(stage=str(job.progress["stage"]),
                            fraction=float(job.progress.get("fraction", 0.0)))
    return JobOut(
        job_id=job.id,
        kind=str(payload.get("kind", "edit")),
        state=job.state,
        version=job.version,
        error=job.error,
        progress=progress,
        target=payload.get("version"),
        n_facts=len(payload.get("facts") or []),
        activated=None if gate is None else not gate.get("held", False),
        gate=gate,
        attempts=job.attempts,
        created_at=job.created_at or None,
        updated_at=job.updated_at or None,
        serving=serving,
        submitter=job.submitter,
        cancel_requested_by=job.cancel_requested_by,
    )


def _summary_fields(version: Version, active: str) -> dict:
    return {
        "id": version.id,
        "parent": version.parent,
        "state": version.shown_state,
        "kind": version.kind,
        "active": version.id == active,
        "created_at": version.created_at or None,
        "method": version.method,
        "n_facts": len(version.facts or []),
        "sha256": version.file_sha256,
        "job_id": version.job_id or version.origin_job,
    }


def version_summary(version: Version, active: str,
                    serving: dict[str, Any] | None = None) -> VersionSummary:
    return VersionSummary(**_summary_fields(version, active), serving=serving)


def _public_diagnostics(diagnostics: dict[str, Any]) -> dict[str, Any]:
    """Diagnostics with the request's λ under its public name (stored as
    ``mom2_update_weight``, like the hparams)."""
    request = diagnostics.get("request")
    stored = STORED_NAMES["covariance_weight"]
    if isinstance(request, dict) and stored in request:
        request = {("covariance_weight" if k == stored else k): v for k, v in request.items()}
        return {**diagnostics, "request": request}
    return diagnostics


def _public_hparams(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A version's stored hyper-parameters under their public names (as stored if a row holds
    something no version of :meth:`EditHparams.from_stored` wrote)."""
    if not stored:
        return None
    try:
        return EditHparams.from_stored(stored).to_dict()
    except (TypeError, ValueError):
        return dict(stored)


def version_detail(version: Version, active: str,
                   serving: dict[str, Any] | None = None) -> VersionDetail:
    """The stored hyper-parameters are read under their public names
    (:meth:`EditHparams.from_stored`); the row keeps the form it was written in."""
    diagnostics = _public_diagnostics(version.diagnostics or {})
    return VersionDetail(
        **_summary_fields(version, active),
        serving=serving,
        facts=list(version.facts or []),
        hparams=_public_hparams(version.hparams),
        layer_stats=version.layer_stats,
        diagnostics=diagnostics or None,
        timings=version.timings or None,
        evaluation=version.evaluation,
        gate=version.gate,
        weights_sha256=diagnostics.get("weights_sha256"),
        source=version.source,
        error=version.error,
    )
