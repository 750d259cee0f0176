"""Store records -> response bodies (one place that knows both shapes)."""

from __future__ import annotations

from typing import Any

from app.api.schemas import JobOut, Progress, VersionDetail, VersionSummary
from app.store import Job, Version
from editing.hparams import public_names


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
    if isinstance(request, dict) and request:
        return {**diagnostics, "request": public_names(request)}
    return diagnostics


def version_detail(version: Version, active: str,
                   serving: dict[str, Any] | None = None) -> VersionDetail:
    """The stored hyper-parameters are read under their public names (``covariance_weight``,
    ``z_lr``, ``z_steps``); the row keeps the names it was written with."""
    diagnostics = _public_diagnostics(version.diagnostics or {})
    return VersionDetail(
        **_summary_fields(version, active),
        serving=serving,
        facts=list(version.facts or []),
        hparams=public_names(version.hparams) if version.hparams else None,
        layer_stats=version.layer_stats,
        diagnostics=diagnostics or None,
        timings=version.timings or None,
        evaluation=version.evaluation,
        gate=version.gate,
        weights_sha256=diagnostics.get("weights_sha256"),
        source=version.source,
        error=version.error,
    )
