"""The model one process serves, and which version's weights it currently holds.

A version's weights are the base weights followed by each delta of its chain applied in order.
Switching versions restores exact copies of the base matrices (taken the first time a delta
touches a layer) and re-applies the chain, or, when the new chain extends the loaded one,
applies only the new tail: the same float operations in the same order, so the result is
bit-identical to a replay from scratch and no error accumulates however often we switch.

Requests run under a read/write lock: many requests may read the same loaded version at once,
and weights change only under the write lock, so no request ever sees a half-switched model.
A request naming another version takes the write lock, switches, and is served exclusively;
the next request for the active version switches back. We chose this over keeping a second
model copy per version: memory stays one model, and named-version queries are rare.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from editing import BaseWeights, WeightDelta, model_fingerprint, weights_digest
from models.load import LoadedModel

log = logging.getLogger(__name__)

Chain = list[tuple[str, WeightDelta]]
"""(version id, delta) pairs, base-first, without the base version itself."""
ChainLoader = Callable[[str], Chain]


class RWLock:
    """A writer-preferring read/write lock (a waiting writer blocks new readers)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


@dataclass(frozen=True)
class Served:
    """What a request gets while it holds the lock: the weights of ``version``."""

    version: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


@dataclass
class Candidate:
    """A new delta applied on the worker's model until it is committed (see
    :meth:`ModelRuntime.candidate`)."""

    served: Served
    """The model holding the candidate weights (``version`` names their parent)."""
    kept: str | None = None
    active: bool = False
    digest: str | None = None

    def weights_digest(self) -> str:
        """The digest of the candidate weights (computed once)."""
        if self.digest is None:
            self.digest = weights_digest(self.served.model)
        return self.digest

    def keep(self, version: str, active: bool = True) -> None:
        """Leave the weights applied as ``version`` (with ``active``, the version served by
        default, as the store now says)."""
        self.kept, self.active = version, active


class ModelRuntime:
    """One loaded model, switched between versions atomically with respect to requests."""

    def __init__(self, lm: LoadedModel, base_id: str, chain_loader: ChainLoader):
        self.lm = lm
        self.base_id = base_id
        self.fingerprint = model_fingerprint(lm.model)
        self._chain_loader = chain_loader
        self._lock = RWLock()
        self._base = BaseWeights()
        self._applied: list[str] = []
        self._loaded = base_id
        self._generation = 0
        self._digest: tuple[int, str] | None = None
        self.active = base_id
        """The version served when a request names none (the one this process follows)."""
        self.switches = 0
        self.base_digest = weights_digest(lm.model)
        """Digest of the base weights (taken now: the model is loaded unedited)."""

    @property
    def loaded(self) -> str:
        """The version whose weights the model holds right now."""
        return self._loaded

    # -- serving --------------------------------------------------------------------------
    @contextmanager
    def serving(self, version: str | None = None) -> Iterator[Served]:
        """Hold the weights of ``version`` (default: the active one) for one request."""
        want = version or self.active
        self._lock.acquire_read()
        if self._loaded == want:
            try:
                yield Served(want, self.lm.model, self.lm.tokenizer)
            finally:
                self._lock.release_read()
            return
        self._lock.release_read()
        self._lock.acquire_write()
        try:
            if self._loaded != want:
                self._load(want)
            yield Served(want, self.lm.model, self.lm.tokenizer)
        finally:
            self._lock.release_write()

    @contextmanager
    def exclusive(self, version: str) -> Iterator[Served]:
        """Hold the weights of ``version`` alone (the editor modifies them temporarily)."""
        self._lock.acquire_write()
        try:
            if self._loaded != version:
                self._load(version)
            yield Served(version, self.lm.model, self.lm.tokenizer)
        finally:
            self._lock.release_write()

    def set_active(self, version: str) -> None:
        """Follow ``version``: load it now (so the next request need not) and serve it by default.

        On any error (unknown version, corrupted or foreign delta) the active version is
        unchanged and the error propagates.
        """
        self._lock.acquire_write()
        try:
            if self._loaded != version:
                self._load(version)
            self.active = version
        finally:
            self._lock.release_write()

    def weights_digest(self, version: str | None = None) -> str:
        """sha256 over every layer's MLP output matrix as served for ``version``.

        Equal digests across processes mean bit-identical edited weights (only these matrices
        are ever edited). Cached until the weights change.
        """
        with self.serving(version):
            cached = self._digest
            if cached and cached[0] == self._generation:
                return cached[1]
            digest = weights_digest(self.lm.model)
            self._digest = (self._generation, digest)
            return digest

    @contextmanager
    def candidate(self, served: Served, delta: WeightDelta) -> Iterator[Candidate]:
        """``served``'s version plus ``delta``, applied once, for the worker to digest, gate
        and commit; call it inside :meth:`exclusive` (``served`` is what that yielded).

        Why: the weights a new version is served with are computed once, by the process that
        made them. On exit they stay loaded as the version :meth:`Candidate.keep` names (and
        it becomes the active one if asked); otherwise (held by the gate, an error, a moved parent)
        the delta is reverted bit for bit and the model holds ``served``'s version again.
        """
        if served.version != self._loaded:
            raise RuntimeError("candidate() needs the weights exclusive() holds")
        delta.check_compatible(self.lm.model, self.fingerprint)
        self._snapshot(delta)
        saved: BaseWeights = delta.apply(self.lm.model)
        self._generation += 1
        trial = Candidate(Served(served.version, self.lm.model, self.lm.tokenizer))
        try:
            yield trial
        finally:
            if trial.kept is None:
                WeightDelta.revert(self.lm.model, saved)
                self._generation += 1
            else:
                self._applied.append(trial.kept)
                self._loaded = trial.kept
                if trial.active:
                    self.active = trial.kept
                self.switches += 1
                if trial.digest is not None:
                    self._digest = (self._generation, trial.digest)
                log.info("serving version %s (computed here)", trial.kept)

    # -- switching (caller holds the write lock) -------------------------------------------
    def _load(self, version: str) -> None:
        chain = self._chain_loader(version)
        for _, delta in chain:  # refuse a bad chain before touching any weight
            delta.check_compatible(self.lm.model, self.fingerprint)
        ids = [vid for vid, _ in chain]
        if ids[: len(self._applied)] == self._applied:
            tail = chain[len(self._applied):]
        else:
            self._restore_base()
            tail = chain
        try:
            for vid, delta in tail:
                self._snapshot(delta)
                delta.apply(self.lm.model)
                self._applied.append(vid)
        except BaseException:
            self._restore_base()
            raise
        finally:
            self._generation += 1
        self._loaded = version
        self.switches += 1
        log.info("serving version %s (%d deltas, %d applied now)", version, len(ids), len(tail))

    def base_weights(self) -> BaseWeights:
        """The exact base bits of every matrix a delta loaded so far has changed (shared, not
        copied: read them while holding the lock): an edit's base targets restore these
        instead of subtracting the chain's updates."""
        return BaseWeights(dict(self._base.tensors))

    def _snapshot(self, delta: WeightDelta) -> None:
        """Keep an exact copy of each base matrix before the first delta ever changes it."""
        self._base.keep(self.lm.model, delta.layers)

    def _restore_base(self) -> None:
        self._base.restore(self.lm.model)
        self._applied = []
        self._loaded = self.base_id
        self._generation += 1
