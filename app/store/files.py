"""Delta files: content-addressed, written before the rows that name them, checked on read.

* **Crash safety by ordering.** A delta file is written (temp file, fsync, rename) *before*
  the SQLite transaction that references it (:meth:`DeltaFiles.transaction`). A crash can
  therefore leave only an unreferenced file (or a temp file), never a version row without its
  file; both leftovers are removed at start (:meth:`DeltaFiles.clean_leftovers`).
* **Content addressing.** Files are named by the sha256 of their bytes, which makes the name
  a checksum: :meth:`DeltaFiles.read` refuses a file whose bytes changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from app.store.connection import Database
from app.store.errors import CorruptDelta, StoreError, StoreWriteError
from app.store.records import StoredFile, Version

__all__ = ["DeltaFiles"]


class DeltaFiles:
    """The ``deltas/`` directory of one data directory."""

    DIR = "deltas"

    def __init__(self, data_dir: Path, db: Database) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / self.DIR
        self.db = db

    def path(self, version: Version) -> Path:
        """The absolute path of a version's delta file."""
        if version.delta_path is None:
            raise StoreError(f"version {version.id} is the base model; it has no delta")
        return self.data_dir / version.delta_path

    def read(self, version: Version) -> bytes:
        """The delta bytes, verified against the recorded sha256 (:class:`CorruptDelta`)."""
        path = self.path(version)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CorruptDelta(
                f"the delta file of version {version.id} is missing ({path}); restore it "
                "from a backup or roll back to a version before it"
            ) from exc
        except OSError as exc:
            raise CorruptDelta(f"cannot read the delta of version {version.id}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != version.file_sha256:
            raise CorruptDelta(
                f"the delta file of version {version.id} is corrupt: sha256 {actual[:12]}… "
                f"!= recorded {str(version.file_sha256)[:12]}…; it was not applied. Restore "
                "the file from a backup or roll back to a version before it"
            )
        return data

    # -- write-then-commit ----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(
        self, delta_bytes: bytes, what: str
    ) -> Iterator[tuple[sqlite3.Connection, StoredFile]]:
        """Write the delta file first, then open ONE write transaction for the rows that name it.

        If anything inside fails, the transaction rolls back and the file is discarded, so no
        version row points at a missing file and no file is left that no row names; a SQLite
        failure becomes a :class:`StoreWriteError` that says what to fix.
        """
        with self.db.file_lock(exclusive=False):
            stored = self._write(delta_bytes)
            try:
                with self.db.write() as conn:
                    yield conn, stored
            except StoreError:
                self._discard(stored.rel)
                raise
            except sqlite3.Error as exc:
                self._discard(stored.rel)
                raise StoreWriteError(
                    f"cannot record {what}: {exc}; free disk space or make the data directory "
                    "writable, then retry"
                ) from exc

    def _write(self, delta_bytes: bytes) -> StoredFile:
        """Write the delta file (if not already there)."""
        file_sha = hashlib.sha256(delta_bytes).hexdigest()
        rel = f"{self.DIR}/{file_sha}.safetensors"
        path = self.data_dir / rel
        # Imported here: ``editing`` pulls in torch, which the store itself does not need.
        from models.files import atomic_write  # no torch (unlike anything under editing/)

        try:
            if not (path.is_file() and _file_sha256(path) == file_sha):
                atomic_write(path, delta_bytes)
            # else: the same content is already stored (content addressing)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot write the delta file in {self.dir}: {exc.strerror or exc}; "
                "free disk space or make the data directory writable, then submit again"
            ) from exc
        return StoredFile(file_sha, rel, len(delta_bytes))

    def _discard(self, rel: str) -> None:
        """Remove a file written for a commit that did not happen, unless a version uses it."""
        with contextlib.suppress(sqlite3.Error, OSError):
            row = self.db.conn().execute(
                "SELECT 1 FROM versions WHERE delta_path = ? LIMIT 1", (rel,)
            ).fetchone()
            if row is None:
                (self.data_dir / rel).unlink(missing_ok=True)

    # -- crash cleanup --------------------------------------------------------------------
    def clean_leftovers(self) -> dict[str, int]:
        """Remove temp files and delta files no version references (crash leftovers).

        Skipped (returns zeros) while another process is committing; it runs again at the
        next start. Returns how many files of each kind were removed.
        """
        removed = {"temp": 0, "orphan": 0}
        try:
            with self.db.file_lock(exclusive=True, blocking=False) as got:
                if got and self.dir.is_dir():
                    self._clean_locked(removed)
        except StoreWriteError:
            pass  # a read-only data directory has nothing we could clean anyway
        return removed

    def _clean_locked(self, removed: dict[str, int]) -> None:
        """Remove leftovers; the caller holds the exclusive file lock."""
        with self.db.read() as conn:
            referenced = {
                row[0]
                for row in conn.execute(
                    "SELECT delta_path FROM versions WHERE delta_path IS NOT NULL"
                )
            }
        for path in self.dir.iterdir():
            rel = f"{self.DIR}/{path.name}"
            if path.name.endswith(".tmp"):
                kind = "temp"
            elif path.suffix == ".safetensors" and rel not in referenced:
                kind = "orphan"
            else:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed[kind] += 1


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
