"""What the store raises: one base class, so callers can catch "the store refused" at once."""

from __future__ import annotations

__all__ = ["Cancelled", "Conflict", "CorruptDelta", "NotFound", "StoreError", "StoreWriteError"]


class StoreError(RuntimeError):
    """Base class: the store refused an operation; the message says what to fix."""


class NotFound(StoreError, KeyError):
    """An unknown job or version id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Conflict(StoreError):
    """The request contradicts the current state (e.g. activating a failed version)."""


class StoreWriteError(StoreError):
    """A commit could not be written (disk full, unwritable directory); nothing changed."""


class CorruptDelta(StoreError):
    """A delta file is missing or its bytes do not match the recorded sha256."""


class Cancelled(Conflict):
    """The job was cancelled (or asked to stop) before its result could be committed."""
