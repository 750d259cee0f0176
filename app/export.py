"""A version as a merged Hugging Face checkpoint, loadable with ``from_pretrained``.

This is how users serve an edited model at scale elsewhere (vLLM, TGI, plain transformers):
the weights of the version (base + its chain of deltas) saved with ``save_pretrained``, plus
``modeledit_version.json`` naming the version and the digest of its edited matrices. Exports
are cached under ``<data_dir>/exports/<version>`` (written to a temp directory, then renamed)
and sent over HTTP as an uncompressed tar stream (safetensors do not compress).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from app.runtime import ModelRuntime, digest_mlp_out
from app.store import VersionStore

MARKER = "modeledit_version.json"
_CHUNK = 1 << 20


def export_version(
    runtime: ModelRuntime, store: VersionStore, version: str, out_dir: Path
) -> Path:
    """Write the merged checkpoint of ``version`` to ``out_dir`` (atomically); return it."""
    record = store.get_version(version)
    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists():
        return out_dir
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with runtime.serving(version) as served:
            served.model.save_pretrained(tmp)
            served.tokenizer.save_pretrained(tmp)
            digest = digest_mlp_out(served.model)
        chain = [v.id for v in store.chain(version)]
        info = {
            "version": version,
            "parent": record.parent,
            "chain": chain,
            "model": runtime.lm.name,
            "base_fingerprint": runtime.fingerprint,
            "weights_sha256": digest,
            "exported_at": time.time(),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


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
