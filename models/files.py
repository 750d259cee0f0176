"""Writing files and directories so a reader never sees a half-written one.

Everything the project caches or stores (deltas, statistics, z, exports, converted models,
downloads) is written to a temporary name beside its destination and renamed into place:
a crash leaves the old state or the new one, never a mix. Plain standard library: the bottom
layer (``models/``) holds it because every layer uses it, and ``import models.files`` loads
no torch (``app/store.py`` writes delta files with it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at ``path`` only when the block succeeds
    (temp file, fsync, rename, fsync of the directory); on an exception nothing appears."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent/old or complete, never partial."""
    with atomic_file(path) as fh:
        fh.write(data)


def publish_dir(tmp: Path, dest: Path, *, overwrite: bool = False) -> bool:
    """Rename the finished directory ``tmp`` to ``dest``; True when it became ``dest``.

    An empty ``dest`` is replaced. A non-empty one is removed first with ``overwrite``;
    otherwise it is kept (a concurrent writer finished first: its result stands) and ``tmp``
    is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and dest.exists():
        shutil.rmtree(dest)
    try:
        tmp.replace(dest)  # rename(2): replaces an empty directory, refuses a non-empty one
        return True
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
