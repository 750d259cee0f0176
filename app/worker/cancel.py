"""Stopping a running job: cancellation by a client and the job time limit.

The editor reports progress at every step of its z optimisation (and at each stage); the
worker hands the job runner a check that runs on every report. The check raises, and the
exception unwinds the edit before anything is committed: the version is written only after
the edit returns, and the store refuses to commit a job whose cancellation was requested
meanwhile (:class:`app.store.Cancelled`), so a request that arrives during the solve or the
gate is honoured too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from app.store import VersionStore

__all__ = ["JobCancelled", "JobCheck", "JobTimedOut"]


class JobCancelled(Exception):
    """A client cancelled the running job (``POST /edits/{id}/cancel``)."""


class JobTimedOut(Exception):
    """The job ran past ``MODELEDIT_JOB_TIME_LIMIT_S``: it fails, with the limit named."""


@dataclass
class JobCheck:
    """The check for one run of one job: cancelled? past its time limit?"""

    store: VersionStore
    job_id: str
    time_limit_s: float
    started: float = field(default_factory=time.monotonic)

    def __call__(self) -> None:
        by = self.store.cancel_requested(self.job_id)
        if by is not None:
            raise JobCancelled(f"cancelled by {by} while it ran; nothing was committed")
        elapsed = time.monotonic() - self.started
        if elapsed > self.time_limit_s:
            raise JobTimedOut(
                f"stopped after {elapsed:.0f}s: past the job time limit of "
                f"{self.time_limit_s:g}s (MODELEDIT_JOB_TIME_LIMIT_S); nothing was committed. "
                "Split the batch or raise the limit")
