"""A version as a merged Hugging Face checkpoint or as a PEFT LoRA adapter.

This is how users serve an edited model at scale elsewhere (vLLM, TGI, plain transformers).
``hf``: the weights of the version (base + its chain of deltas) saved with
``save_pretrained``. ``peft``: only the version's change from the base, as a LoRA adapter on
the MLP output projections (:mod:`editing.export.peft`), so one LoRA server holding the base
can serve every version. Both carry ``modeledit_version.json`` naming the version, its chain
and the digest of its edited matrices. Exports are cached under ``<data_dir>/exports/<version>``
and ``<data_dir>/exports_peft/<version>`` (written to a temp directory, then renamed) and sent
over HTTP as an uncompressed tar stream (safetensors do not compress).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.serving.runtime import ModelRuntime
from app.store import Version, VersionStore
from editing import export_peft_adapter, weights_digest
from models.files import publish_dir
from models.specs import mlp_out_weight

if TYPE_CHECKING:
    from app.serving.parts import ModelParts

MARKER = "modeledit_version.json"
FORMATS = ("hf", "peft")
"""``hf``: merged checkpoint (the default); ``peft``: LoRA adapter of the change from base."""
_CHUNK = 1 << 20


class BaseNotExportable(ValueError):
    """The base version has no change from the base: there is no adapter to write."""


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def export_lock(out_dir: Path) -> threading.Lock:
    """One lock per export directory (a version and format) in this process: a second first
    export of it waits for the first and then sends its result instead of writing again."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(Path(out_dir).absolute(), threading.Lock())


def export_version(
    runtime: ModelRuntime, store: VersionStore, version: str, out_dir: Path
) -> Path:
    """Write the merged checkpoint of ``version`` to ``out_dir`` (atomically); return it.

    Concurrent exports of one version write once (a per-directory lock; across processes,
    each writes its own temporary directory and the first published stands). A published
    export is never replaced, since another response may be streaming it. With the API's
    runtime the model keeps serving the base meanwhile: the version's edited matrices are
    merged beside it and saved in place of the base's (no write lock, the engine runs on).
    """
    out_dir = Path(out_dir)
    with export_lock(out_dir):
        if (out_dir / MARKER).exists():
            return out_dir
        record = store.get_version(version)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
        try:
            digest = _save_merged(runtime, version, tmp)
            info = {
                "version": version,
                "parent": record.parent,
                "chain": [v.id for v in store.chain(version)],
                "model": runtime.lm.name,
                "base_fingerprint": runtime.fingerprint,
                "weights_sha256": digest,
                "exported_at": time.time(),
            }
            (tmp / MARKER).write_text(json.dumps(info, indent=2))
            _publish(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _save_merged(runtime: ModelRuntime, version: str, tmp: Path) -> str:
    """Save ``version``'s merged weights and the tokenizer in ``tmp``; return their digest."""
    from app.serving.additive import AdditiveRuntime

    if not isinstance(runtime, AdditiveRuntime):  # a process that merges (the CLI's export)
        with runtime.serving(version) as served:
            served.model.save_pretrained(tmp)
            served.tokenizer.save_pretrained(tmp)
            return weights_digest(served.model)
    merged = runtime.merged_weights(version)
    with runtime.serving(runtime.base_id) as served:  # read lock: the base stays as it is
        model = served.model
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        state = model.state_dict()
        for layer, weight in merged.items():
            state[names[id(mlp_out_weight(model, layer))]] = weight
        model.save_pretrained(tmp, state_dict=state)
        served.tokenizer.save_pretrained(tmp)
    return runtime.weights_digest(version)


def peft_export_dir(data_path: Path, version: str) -> Path:
    """Where the exact adapter of ``version`` is cached (beside, not inside, the hf exports, so
    no version id can collide with it). Compressed ones (``tol`` > 0) are not cached: any
    float is a valid tolerance, and they take a second to rebuild."""
    return Path(data_path) / "exports_peft" / version


def base_export_dir(data_path: Path, base_id: str) -> Path:
    """Where the base version's merged checkpoint is cached (the hf export of the base)."""
    return Path(data_path) / "exports" / base_id


def peft_base_name(parts: ModelParts, data_path: Path | None) -> str:
    """What an adapter's ``base_model_name_or_path`` names: the weights its deltas apply to.

    The Hub id when the model was loaded by one (its ``name_or_path`` is no local path).
    Otherwise (the default model, dequantised from a GGUF, differs from the Hub's weights; a
    local directory may move) the base version's exported checkpoint: with ``data_path``, its
    absolute path there, exported now if missing; without, the base version's id, which is the
    directory ``GET /versions/<base>/export`` unpacks to, for a client that fetched both.
    """
    source = str(getattr(parts.lm.model.config, "name_or_path", "") or "")
    if source and not Path(source).expanduser().exists():
        return source
    base_id = parts.runtime.base_id
    if data_path is None:
        return base_id
    out = base_export_dir(data_path, base_id)
    export_version(parts.runtime, parts.store, base_id, out)
    return str(out.resolve())


def export_peft_version(parts: ModelParts, version: str, out_dir: Path, tol: float = 0.0,
                        base_model_name: Callable[[], str] | None = None) -> Path:
    """Write ``version``'s chain as a PEFT LoRA adapter in ``out_dir`` (atomically); return it.

    ``base_model_name`` gives the adapter's ``base_model_name_or_path`` (:func:`peft_base_name`),
    called only once the version is known to be exportable (it may export the base); default:
    the loaded model's ``name_or_path``, for a server such as vLLM that brings its own base.

    Raises :class:`BaseNotExportable` for the base version, ``UnusableDelta`` for a chain that
    cannot be built and ``PeftExportError`` for an adapter vLLM would refuse (rank > 512).
    """
    record = parts.store.get_version(version)
    if record.is_base:
        raise BaseNotExportable(
            f"version {version} is the base model: it has no change to export as an adapter; "
            "serve the base model itself (or export it with format hf)")
    out_dir = Path(out_dir)
    with export_lock(out_dir):
        return _export_peft(parts, record, out_dir, tol, base_model_name)


def _export_peft(parts: ModelParts, record: Version, out_dir: Path, tol: float,
                 base_model_name: Callable[[], str] | None) -> Path:
    version = record.id
    if _reusable(out_dir, version, tol):
        return out_dir
    deltas = parts.deltas.deltas(version)  # checked against the served model
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        adapter = export_peft_adapter(deltas, parts.lm.model, tmp, tol=tol,
                                      base_model_name=base_model_name() if base_model_name else None)
        info = {**_marker(parts, record), **adapter.summary(),
                "delta_sha256": [d.sha256 for d in deltas]}
        info["weights_sha256"] = (record.diagnostics.get("weights_sha256")
                                  or parts.runtime.weights_digest(version))
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _marker(parts: ModelParts, record: Version) -> dict[str, Any]:
    return {
        "version": record.id,
        "parent": record.parent,
        "chain": [v.id for v in parts.store.chain(record.id)],
        "model": parts.lm.name,
        "base_fingerprint": parts.runtime.fingerprint,
        "exported_at": time.time(),
    }


def _reusable(out_dir: Path, version: str, tol: float) -> bool:
    """True if ``out_dir`` already holds this adapter; FileExistsError if it holds anything else
    (never overwrite a directory we did not write, nor another version's export)."""
    marker = out_dir / MARKER
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if (info.get("version"), info.get("format"), info.get("tol")) == (version, "peft", tol):
            return True
        raise FileExistsError(
            f"{out_dir} holds another export ({info.get('version')}, format "
            f"{info.get('format', 'hf')}, tol {info.get('tol', 0)}); choose a new directory")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an export of this tool; "
                              "choose a new directory")
    return False


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir`` (an empty directory there is replaced). If a
    concurrent export of the same adapter got there first, its result stays and the caller
    drops ours."""
    if not publish_dir(tmp, out_dir) and not (out_dir / MARKER).exists():
        raise FileExistsError(f"{out_dir} appeared while exporting and is not an export of "
                              "this tool; choose a new directory")


def tar_stream(directory: Path, arcname: str) -> Iterator[bytes]:
    """Stream ``directory`` as a tar archive without holding any file in memory."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    for path in files:
        info = tarfile.TarInfo(f"{arcname}/{path.relative_to(directory).as_posix()}")
        stat = path.stat()
        info.size = stat.st_size
        info.mtime = int(stat.st_mtime)
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
        padding = (-stat.st_size) % tarfile.BLOCKSIZE
        if padding:
            yield b"\0" * padding
    yield b"\0" * (tarfile.BLOCKSIZE * 2)
