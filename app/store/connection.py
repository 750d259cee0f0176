"""SQLite connections, transactions and the data directory's file lock.

* **Several threads and processes.** Each thread gets its own connection (WAL: readers never
  block the writer); writes use ``BEGIN IMMEDIATE`` and a busy timeout, so API processes and
  the worker can share the file.
* **A file lock** keeps the leftover cleanup of a starting process away from another
  process's in-flight commit (shared while committing, exclusive while cleaning).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from app.store.errors import StoreError, StoreWriteError
from app.store.tables import MIGRATIONS, SCHEMA, SCHEMA_VERSION

__all__ = ["Database"]


class Database:
    """One SQLite file: a connection per thread, short transactions, the ``meta`` table."""

    BUSY_TIMEOUT_MS = 30_000
    LOCK_NAME = ".store.lock"

    def __init__(self, db_path: Path, lock_dir: Path) -> None:
        self.db_path = db_path
        self.lock_path = lock_dir / self.LOCK_NAME
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    # -- connections and transactions -----------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own: sharing one is unsafe)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.db_path,
                timeout=self.BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # only so close() may close it from another thread
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self.BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; BEGIN IMMEDIATE takes the write lock up front, so two
        writers never both read-then-write on stale data (no SQLITE_BUSY mid-transaction).
        SQLite failures (disk full, read-only file, locked too long) become
        :class:`StoreWriteError`, after a rollback: the database is unchanged."""
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._write_error(exc) from exc
            raise

    def _write_error(self, exc: sqlite3.Error) -> StoreWriteError:
        return StoreWriteError(
            f"the store {self.db_path} could not be written ({exc}); free disk space or make "
            "the data directory writable, then retry"
        )

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent snapshot."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def init_schema(self) -> None:
        """WAL mode, the tables (if missing), and a refusal of a newer schema."""
        try:
            conn = self.conn()
            mode = self._wal(conn)
            if mode.lower() != "wal":
                raise StoreError(
                    f"SQLite refused WAL mode ({mode}) for {self.db_path}; "
                    "put the data directory on a local filesystem"
                )
            conn.execute("PRAGMA foreign_keys = OFF")  # not inside a transaction: a no-op there
            try:
                with self.write() as conn:
                    self._migrate(conn)
            finally:
                conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreWriteError(f"cannot open the store {self.db_path}: {exc}") from exc

    def _wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL, waiting while another process creates or migrates the file: SQLite
        answers a journal-mode change with "database is locked" at once, without its busy
        handler, while another connection writes a new database (processes started together
        on a fresh data directory)."""
        deadline = time.monotonic() + self.BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Inside one write transaction (several processes may start at once: the first one
        migrates, the others find the file current): schema 1 if the file is new, then each
        migration past the file's ``user_version``; a file newer than this code is refused."""
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(f"{self.db_path} has schema {found}, newer than this code "
                             f"({SCHEMA_VERSION}); upgrade the service")
        if found <= 1:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            found = 1
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise StoreError(f"{self.db_path}: the schema migration left {len(broken)} rows "
                             "whose references do not resolve; the file is unchanged")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every connection this database opened (any thread)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    # -- the file lock --------------------------------------------------------------------
    @contextlib.contextmanager
    def file_lock(self, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
        """A shared lock while committing, an exclusive one while cleaning: a process that
        starts must not delete the file another process has written but not yet recorded.
        Yields whether the lock was taken (always ``True`` when ``blocking``)."""
        path = self.lock_path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot open {path}: {exc.strerror or exc}; make the data directory writable"
            ) from exc
        try:
            flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, flags | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # also releases the lock


# -- the meta table (the active pointer lives there) ------------------------------------------
def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
