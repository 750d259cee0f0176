"""What the worker does with one job: edit, revert or evaluate.

Each handler computes on the model held by the worker's runtime and ends the job through the
store, whose commits are exactly-once per job (a job delivered twice has one effect). A
handler raises :class:`JobFailed` for a reason the user must see; any other exception also
fails the job, with its type and message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

from app.serving.delta_source import DeltaSource, UnusableDelta
from app.serving.runtime import ModelRuntime, Served
from app.store import Job, Version, VersionStore
from app.store.payloads import EditJob, EvaluateJob, InvalidPayload, RevertJob
from app.worker.gate import GateThresholds, QualityGate
from app.worker.strength import replay_weight, requested
from editing import (
    EditHparams,
    Editor,
    EditRequest,
    EditState,
    InvalidEditRequest,
    WeightDelta,
    preset_for,
    with_strength,
)
from models.load import LoadedModel, cache_dir
from models.plan import InsufficientMemory

log = logging.getLogger(__name__)

MAX_RECOMPUTE = 3
"""Times an edit is recomputed when the active version moves under it (a rollback)."""
PROGRESS_EVERY_S = 0.5


class JobFailed(RuntimeError):
    """A job that cannot succeed; the message is stored as the job's error."""


def base_hparams(lm: LoadedModel, overrides: dict[str, Any]) -> EditHparams:
    """The model's preset with the operator's overrides (``MODELEDIT_HPARAMS``)."""
    return preset_for(lm.name, lm.model).with_overrides(overrides)


@dataclass
class Editors:
    """The worker's one :class:`Editor` (one statistics cache for every method), and the
    hyper-parameters each job computes with: the service's, for the job's method and the
    request's strength. Made on first use."""

    lm: LoadedModel
    hparams: EditHparams
    cache: Path = field(default_factory=cache_dir)
    _editor: Editor | None = None

    @property
    def editor(self) -> Editor:
        if self._editor is None:
            self._editor = Editor(self.lm.model, self.lm.tokenizer, hparams=self.hparams,
                                  model_name=self.lm.name, cache_dir=self.cache)
        return self._editor

    def hparams_for(self, method: str, strength: str | None = None,
                    covariance_weight: float | None = None) -> EditHparams:
        """The service's hparams for ``method``, at the strength a request asks for."""
        try:
            hparams = self.hparams.with_method(method)
        except ValueError as exc:
            raise JobFailed(str(exc)) from exc
        return with_strength(hparams, strength, covariance_weight)


class _Progress:
    """Throttled progress reports into the store (a write per stage change or 0.5 s)."""

    def __init__(self, store: VersionStore, job_id: str, prefix: str = "",
                 check: Callable[[], None] = lambda: None):
        self.store, self.job_id, self.prefix, self.check = store, job_id, prefix, check
        self._last = (None, 0.0)

    def __call__(self, stage: str, fraction: float) -> None:
        self.check()  # the worker's cancel / time-limit check, every step (app/worker/cancel.py)
        now = time.monotonic()
        name = f"{self.prefix}{stage}"
        if name == self._last[0] and now - self._last[1] < PROGRESS_EVERY_S and fraction < 1:
            return
        self._last = (name, now)
        try:
            self.store.set_progress(self.job_id, {"stage": name, "fraction": round(fraction, 4)})
        except Exception:  # progress is best effort; never fail an edit over it
            log.debug("progress not recorded", exc_info=True)


def requests_from_facts(facts: list[dict[str, Any]]) -> list[EditRequest]:
    """Stored fact dicts as validated requests; a bad one fails the job (JobFailed)."""
    try:
        return [EditRequest.from_record(f).validate(i) for i, f in enumerate(facts)]
    except (InvalidEditRequest, KeyError) as exc:
        raise JobFailed(f"invalid facts: {exc}") from exc


def layer_stats(delta: WeightDelta) -> list[dict[str, Any]]:
    return [
        {"layer": layer, "norm": delta.updates[layer].norm(),
         "rank": delta.updates[layer].rank(),
         "factored": delta.updates[layer].factored}
        for layer in delta.layers
    ]


class JobRunner:
    """Runs jobs on one model; used by the worker loop."""

    def __init__(
        self,
        store: VersionStore,
        runtime: ModelRuntime,
        deltas: DeltaSource,
        editors: Editors,
        default_method: str = "fe",
        shared_data: Path | None = None,
        before_commit: Callable[[], None] = lambda: None,
        gate: QualityGate | None = None,
    ):
        self.gate = gate or QualityGate(runtime, GateThresholds(), store)
        """Measures every new batch before it becomes active (app/worker/gate.py)."""
        self.store = store
        self.runtime = runtime
        self.deltas = deltas
        self.editors = editors
        self.default_method = default_method
        self.shared_data = shared_data
        self.before_commit = before_commit
        """Called right before each commit (the worker checks it still holds the lock)."""
        self.check: Callable[[], None] = lambda: None
        """Called at every progress report; raises to stop the job (app/worker/cancel.py)."""

    def warm(self) -> None:
        """Load now what the first edit would otherwise load while its user waits: the context
        prefixes and the key statistics of the service's settings (from the cache: statistics
        never computed are left to the first edit, which reports its progress), and the gate's
        probe scores on the active version."""
        editor = self.editors.editor
        editor.prefixes()
        editor.stats.cached(editor.hparams.edited_layers, editor.fingerprint)
        self.gate.warm(self.store.active_version())

    def run(self, job: Job) -> Version:
        """Run one job to its commit; returns the version its ``version`` field names. A
        payload that is no known job (unknown kind, missing field) fails it with the reason."""
        try:
            request = job.request
        except InvalidPayload as exc:
            raise JobFailed(str(exc)) from exc
        match request:
            case EditJob():
                return self.edit(job, request)
            case RevertJob():
                return self.revert(job, request)
            case EvaluateJob():
                return self.evaluate(job, request)
            case _:
                assert_never(request)

    # -- edit -------------------------------------------------------------------------------
    def compute(
        self, served: Served, requests: list[EditRequest], hparams: EditHparams,
        progress: _Progress,
    ) -> tuple[WeightDelta, dict[str, Any], dict[str, Any]]:
        """The delta of one batch on the weights ``served`` holds (left as they were), in the
        form it is stored in; its diagnostics and timings."""
        try:
            chain = self.deltas.deltas(served.version)
        except UnusableDelta as exc:
            raise JobFailed(f"cannot build the weights of {served.version}: {exc}") from exc
        started = time.perf_counter()
        try:
            state = EditState.from_deltas(chain, base=self.runtime.base_weights())
            result = self.editors.editor.edit(requests, state=state, progress=progress,
                                              hparams=hparams)
        except InsufficientMemory as exc:
            raise JobFailed(str(exc)) from exc
        timings = {**result.diagnostics.get("timings", {}),
                   "compute_s": time.perf_counter() - started}
        return result.delta.stored(), result.diagnostics, timings

    def edit(self, job: Job, request: EditJob) -> Version:
        """Compute the batch's delta on the active version, apply it once, digest and gate
        those weights, commit; they stay loaded as the new version unless the gate holds it."""
        facts = list(request.facts)
        requests = requests_from_facts(facts)
        method = request.method or self.default_method
        progress = _Progress(self.store, job.id, check=self.check)
        for _attempt in range(MAX_RECOMPUTE):
            parent = self.store.active_version()
            hparams = self.editors.hparams_for(method, request.strength, request.covariance_weight)
            with self.runtime.exclusive(parent) as served:
                delta, diagnostics, timings = self.compute(served, requests, hparams, progress)
                progress("gate", 0.0)
                gate_run = self.gate.start(served, requests)
                with self.runtime.candidate(served, delta) as candidate:
                    gate = gate_run.finish(candidate.served, delta.sha256, request.gate)
                    if self.store.active_version() != parent:
                        log.info("active version moved during job %s; recomputing", job.id)
                        continue
                    self.before_commit()
                    progress("commit", 1.0)
                    version = self.store.commit_version(
                        job.id, parent, delta.to_bytes(), delta.sha256,
                        method=method, hparams=delta.hparams, facts=facts,
                        layer_stats=layer_stats(delta),
                        diagnostics={**diagnostics, "weights_sha256": candidate.weights_digest(),
                                     "delta_content_sha256": delta.sha256, "gate": gate,
                                     "request": requested(request.strength,
                                                          request.covariance_weight)},
                        timings={**timings, "gate_s": gate["gate_s"]},
                        make_active=not gate["held"], only_if_parent_active=True,
                    )
                    self.deltas.remember(version.id, delta)
                    if not gate["held"]:
                        candidate.keep(version.id)
                    return version
        raise JobFailed(f"the active version kept changing; submit the job again "
                        f"(tried {MAX_RECOMPUTE} times)")

    # -- revert -----------------------------------------------------------------------------
    def revert(self, job: Job, request: RevertJob) -> Version:
        """Drop ``version`` from the active lineage: recompute each later batch on top of its
        parent, as new versions, and make the last one active."""
        target = request.version
        active = self.store.active_version()
        lineage = self.store.chain(active)
        ids = [v.id for v in lineage]
        if target not in ids:
            raise JobFailed(f"version {target} is not in the lineage of the active version "
                            f"{active}; roll back to a version containing it first")
        index = ids.index(target)
        if index == 0:
            raise JobFailed("the base model cannot be reverted; roll back to it instead")
        parent = lineage[index - 1].id
        progress_total = max(1, len(lineage) - index - 1)
        for step, old in enumerate(lineage[index + 1:]):
            progress = _Progress(self.store, job.id, prefix=f"replay {step + 1}/"
                                 f"{progress_total} ", check=self.check)
            method = old.method or self.default_method
            hparams = self.editors.hparams_for(method, None,
                                               replay_weight(old.hparams, old.diagnostics))
            facts = list(old.facts or [])
            with self.runtime.exclusive(parent) as served:
                delta, diagnostics, timings = self.compute(served, requests_from_facts(facts),
                                                           hparams, progress)
                with self.runtime.candidate(served, delta) as candidate:
                    self.before_commit()
                    version = self.store.commit_derived_version(
                        parent, delta.to_bytes(), delta.sha256, origin_job=job.id, step=step,
                        kind="revert", method=method, hparams=delta.hparams,
                        facts=facts, layer_stats=layer_stats(delta),
                        diagnostics={**diagnostics, "weights_sha256": candidate.weights_digest(),
                                     "delta_content_sha256": delta.sha256},
                        timings=timings,
                        source={"reverted": target, "replays": old.id, "from": active},
                    )
                    self.deltas.remember(version.id, delta)
                    candidate.keep(version.id, active=False)
            parent = version.id
        if self.store.active_version() != active:
            raise JobFailed(f"the active version moved from {active} during the revert; "
                            "submit the revert again")
        self.before_commit()
        self.store.finish_job(job.id, parent, make_active=True)
        return self.store.get_version(parent)

    # -- evaluate ---------------------------------------------------------------------------
    def evaluate(self, job: Job, request: EvaluateJob) -> Version:
        """Metrics of ``version`` against its parent, stored with the version."""
        from editing import DataError, evaluate_delta, load_records

        version = self.store.get_version(request.version)
        records: list[Any] = []
        if request.include_own_facts:
            records += requests_from_facts(list(version.facts or []))
        records += requests_from_facts(list(request.records))
        if request.data_file:
            from editing import shared_data_dir

            path = (self.shared_data or shared_data_dir()) / request.data_file
            try:
                records += load_records(path, request.limit)
            except (DataError, OSError) as exc:
                raise JobFailed(f"cannot read {request.data_file}: {exc}") from exc
        if not records:
            raise JobFailed("nothing to evaluate (no facts, records or data_file)")
        _Progress(self.store, job.id, check=self.check)("evaluate", 0.0)
        started = time.perf_counter()
        reference = version.parent or version.id
        delta = None if version.is_base else self.deltas.delta(version)
        with self.runtime.exclusive(reference) as served:
            try:
                report = evaluate_delta(served.model, served.tokenizer, records, delta)
            except InsufficientMemory as exc:
                raise JobFailed(str(exc)) from exc
        report = {**report, "reference": reference, "records": len(records),
                  "job_id": job.id, "seconds": round(time.perf_counter() - started, 3)}
        self.before_commit()
        self.store.set_evaluation(version.id, report)
        self.store.finish_job(job.id, version.id, make_active=False)
        return version
