"""``/versions``: lineage, one version's record, rollback, revert, evaluate, export."""

from __future__ import annotations

import logging
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path as FsPath

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError
from starlette.background import BackgroundTask

from app.api.deps import (
    ServingLookup,
    get_parts,
    get_runtime,
    get_services,
    get_serving,
    get_settings,
    get_store,
    get_submitter,
)
from app.api.errors import ApiError
from app.api.fact_checks import Tokenizer, check_tokens, get_tokenizer, limits_of
from app.api.schemas import (
    VERSION_ID_PATTERN,
    ErrorOut,
    EvaluateIn,
    JobAccepted,
    RollbackOut,
    VersionDetail,
    VersionList,
)
from app.api.security import require_admin, require_edit, require_read
from app.api.submit import JobSubmitter
from app.api.views import version_detail, version_summary
from app.queue import publish_active_changed
from app.services import ModelParts, Services
from app.serving.delta_source import UnusableDelta
from app.serving.export import (
    BaseNotExportable,
    export_peft_version,
    export_version,
    peft_base_name,
    peft_export_dir,
    tar_stream,
)
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from app.store import Conflict, NotFound, StoreError, Version, VersionStore
from app.store.payloads import EvaluateJob, RevertJob
from editing import PeftExportError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/versions", tags=["versions"])

VersionPath = Path(min_length=1, max_length=128, pattern=VERSION_ID_PATTERN, examples=["v1"])
NOT_FOUND = {404: {"model": ErrorOut, "description": "unknown version id"}}
CONFLICT = {409: {"model": ErrorOut, "description": "not possible in the current state"}}


def _version(store: VersionStore, vid: str) -> Version:
    try:
        return store.get_version(vid)
    except NotFound as exc:
        raise ApiError(404, str(exc), field="version") from exc


@router.get("", response_model=VersionList, summary="Every version and which one is active")
def list_versions(
    store: VersionStore = Depends(get_store),
    serving: ServingLookup = Depends(get_serving),
    _who: str = Depends(require_read),
) -> VersionList:
    active = store.active_version()
    return VersionList(
        active=active,
        versions=[version_summary(v, active, serving(v.id)) for v in store.list_versions()],
    )


@router.get(
    "/{version}",
    response_model=VersionDetail,
    summary="One version: parent, facts, method, hparams, per-layer norms, timings, evaluation",
    responses=NOT_FOUND,
)
def get_version(
    version: str = VersionPath,
    store: VersionStore = Depends(get_store),
    runtime: ModelRuntime = Depends(get_runtime),
    serving: ServingLookup = Depends(get_serving),
    _who: str = Depends(require_read),
) -> VersionDetail:
    record = _version(store, version)
    detail = version_detail(record, store.active_version(), serving(record.id))
    if record.is_base:
        detail.weights_sha256 = runtime.base_digest
    return detail


@router.post(
    "/{version}/rollback",
    response_model=RollbackOut,
    summary="Make a version active again (its exact weights)",
    responses={**NOT_FOUND, **CONFLICT},
)
def rollback(
    version: str = VersionPath,
    services: Services = Depends(get_services),
    _who: str = Depends(require_admin),
) -> RollbackOut:
    """A pointer move in the store; this process switches at once (restoring the exact base
    matrices and re-applying the chain), the worker and other API processes follow."""
    _version(services.store, version)
    previous = services.store.active_version()
    try:
        services.deltas.chain(version)  # refuse a version whose weights cannot be built
        services.store.set_active(version, actor=_who)
    except UnusableDelta as exc:
        raise ApiError(409, str(exc), field="version") from exc
    except Conflict as exc:
        raise ApiError(409, str(exc), field="version") from exc
    services.follower.sync()
    try:
        publish_active_changed(services.client, services.settings.redis_prefix, version,
                               previous=previous)
    except (RedisError, OSError):
        log.warning("rollback to %s not published; other processes follow within %.0fs",
                    version, services.settings.follow_poll_s)
    digest = None
    if services.runtime.active == version:
        digest = services.runtime.weights_digest(version)
    return RollbackOut(active=version, previous=previous, weights_sha256=digest)


@router.post(
    "/{version}/revert",
    status_code=202,
    response_model=JobAccepted,
    summary="Drop one batch, keep the later ones (recomputed on its parent as new versions)",
    responses={**NOT_FOUND, **CONFLICT},
)
def revert(
    version: str = VersionPath,
    store: VersionStore = Depends(get_store),
    submitter: JobSubmitter = Depends(get_submitter),
    _who: str = Depends(require_admin),
) -> JobAccepted:
    """Queued like an edit (so it runs in order with edits). The job's `version` is the new
    active version once it commits."""
    record = _version(store, version)
    if record.is_base:
        raise ApiError(409, "the base model cannot be reverted; roll back to it instead",
                       field="version")
    lineage = [v.id for v in store.chain(store.active_version())]
    if version not in lineage:
        raise ApiError(
            409,
            f"version {version} is not in the lineage of the active version "
            f"({' -> '.join(lineage)}); roll back to a version that contains it first",
            field="version",
        )
    return submitter.submit(RevertJob(version=version), submitter=_who)


@router.post(
    "/{version}/evaluate",
    status_code=202,
    response_model=JobAccepted,
    summary="Evaluate a version on its own facts (and optional records); stored with it",
    responses={**NOT_FOUND, **CONFLICT},
)
def evaluate(
    version: str = VersionPath,
    body: EvaluateIn | None = Body(None),
    store: VersionStore = Depends(get_store),
    settings: Settings = Depends(get_settings),
    submitter: JobSubmitter = Depends(get_submitter),
    tokenizer: Tokenizer = Depends(get_tokenizer),
    _who: str = Depends(require_edit),
) -> JobAccepted:
    """CounterFact metrics (efficacy, generalization, specificity, KL, top-k overlap) of the
    version against its parent; zsRE metrics for records without `target_true`. Runs in the
    worker; the result appears under `evaluation` in `GET /versions/{version}`."""
    body = body or EvaluateIn()
    record = _version(store, version)
    if record.state != "committed":
        raise ApiError(409, f"version {version} is {record.state}; it cannot be evaluated",
                       field="version")
    if body.data_file is not None:
        shared = _shared_data(settings)
        if not (shared / body.data_file).is_file():
            raise ApiError(422, f"no file {body.data_file!r} in the shared data directory",
                           field="data_file")
    own = bool(record.facts) and body.include_own_facts
    if not own and not body.records and body.data_file is None:
        raise ApiError(422, "nothing to evaluate: this version has no facts of its own; give "
                       "'records' or 'data_file'", field="records")
    check_tokens(body.records, tokenizer, limits_of(settings), field="records")
    payload = EvaluateJob(
        version=version,
        include_own_facts=body.include_own_facts,
        records=[r.model_dump(exclude_none=True) for r in body.records],
        data_file=body.data_file,
        limit=body.limit,
    )
    return submitter.submit(payload, submitter=_who)


def _shared_data(settings: Settings) -> FsPath:
    from editing import shared_data_dir

    return settings.shared_data or shared_data_dir()


class ExportFormat(StrEnum):
    """``hf``: merged checkpoint; ``peft``: LoRA adapter of the change from the base."""

    hf = "hf"
    peft = "peft"


@router.get(
    "/{version}/export",
    summary="The version as a merged Hugging Face checkpoint or a PEFT LoRA adapter (a tar)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}},
                     "description": "format=hf: config, safetensors weights and tokenizer; "
                                    "format=peft: adapter_config.json and "
                                    "adapter_model.safetensors"},
               422: {"model": ErrorOut,
                     "description": "unknown format, bad tol, or an adapter rank above 512"},
               **NOT_FOUND, **CONFLICT},
)
def export(
    version: str = VersionPath,
    export_format: ExportFormat = Query(
        ExportFormat.hf, alias="format",
        description="`hf` (merged checkpoint) or `peft` (LoRA adapter)"),
    tol: float = Query(
        0.0, ge=0.0, lt=1.0,
        description="format=peft only: relative error allowed per layer for a lower-rank "
                    "adapter (truncated SVD); 0 is exact"),
    settings: Settings = Depends(get_settings),
    parts: ModelParts = Depends(get_parts),
    _who: str = Depends(require_admin),
) -> StreamingResponse:
    """`curl -o v1.tar .../versions/v1/export && tar xf v1.tar` then
    `AutoModelForCausalLM.from_pretrained("v1")`. With `?format=peft` the tar holds a PEFT
    LoRA adapter (vLLM's `--enable-lora`, or `AutoPeftModelForCausalLM.from_pretrained("v1")`:
    its base is the Hub id the model was loaded by, else `v0`, the base version's export,
    unpacked beside it).
    Exact exports are cached under `<data_dir>/exports/` and `<data_dir>/exports_peft/`."""
    record = _version(parts.store, version)
    if record.state != "committed":
        raise ApiError(409, f"version {version} is {record.state}; it cannot be exported",
                       field="version")
    if export_format is ExportFormat.peft:
        return _export_peft(settings, parts, version, tol)
    if tol != 0:
        raise ApiError(422, "tol applies to format=peft only; the hf export is always exact",
                       field="tol")
    out = settings.data_path / "exports" / version
    try:
        export_version(parts.runtime, parts.store, version, out)
    except UnusableDelta as exc:
        raise ApiError(409, str(exc), field="version") from exc
    except (OSError, StoreError) as exc:
        log.exception("export of %s failed", version)
        raise ApiError(503, "the export could not be written (the server log says why); "
                       "retry later") from exc
    return _tar_response(out, version, f"{version}.tar")


def _export_peft(
    settings: Settings, parts: ModelParts, version: str, tol: float
) -> StreamingResponse:
    """The exact adapter is cached; a compressed one is built in a scratch directory that is
    removed once sent (any tol is valid, so caching them would let requests fill the disk)."""
    scratch = None
    if tol == 0:
        out = peft_export_dir(settings.data_path, version)
    else:
        root = settings.data_path / "exports_peft"
        root.mkdir(parents=True, exist_ok=True)
        scratch = FsPath(tempfile.mkdtemp(dir=root, prefix=".scratch-"))
        out = scratch / version
    try:
        try:
            export_peft_version(parts, version, out, tol,
                                base_model_name=lambda: peft_base_name(parts, None))
        except (BaseNotExportable, UnusableDelta) as exc:
            raise ApiError(409, str(exc), field="version") from exc
        except PeftExportError as exc:
            raise ApiError(422, str(exc), field="tol") from exc
        except (OSError, StoreError) as exc:
            log.exception("adapter export of %s failed", version)
            raise ApiError(503, "the export could not be written (the server log says why); "
                           "retry later") from exc
    except BaseException:
        _remove(scratch)
        raise
    cleanup = BackgroundTask(_remove, scratch) if scratch is not None else None
    return _tar_response(out, version, f"{version}-peft.tar", cleanup)


def _remove(path: FsPath | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _tar_response(directory: FsPath, version: str, filename: str,
                  background: BackgroundTask | None = None) -> StreamingResponse:
    return StreamingResponse(
        tar_stream(directory, version),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        background=background,
    )
