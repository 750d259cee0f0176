"""The worker's per-step check (app/worker/cancel.py): what raises it, and that the editor
calls it at every step of its z optimisation, so a cancelled job stops within one step."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.store import VersionStore
from app.worker.cancel import JobCancelled, JobCheck, JobTimedOut
from editing import Editor
from tests.conftest import FACTS, TINY_HPARAMS


def test_check_raises_once_cancelled_or_past_the_limit(tmp_path: Path) -> None:
    with VersionStore(tmp_path) as store:
        job, _ = store.create_job({"facts": [1]})
        store.mark_running(job.id)
        check = JobCheck(store, job.id, time_limit_s=60)
        check()  # neither: returns
        store.cancel_job(job.id, "bob")
        with pytest.raises(JobCancelled, match="cancelled by bob"):
            check()
        other, _ = store.create_job({"facts": [2]})
        late = JobCheck(store, other.id, time_limit_s=5, started=time.monotonic() - 6)
        with pytest.raises(JobTimedOut, match="MODELEDIT_JOB_TIME_LIMIT_S"):
            late()


def test_the_z_loop_reports_every_step_and_a_raise_stops_it(tiny, corpus, tmp_path) -> None:
    model, tok = tiny
    steps = 6
    hp = TINY_HPARAMS.replace(z_steps=steps, kl_factor=0.0)
    editor = Editor(model, tok, hparams=hp, model_name="tiny", cache_dir=tmp_path, corpus=corpus)
    seen: list[str] = []
    editor.edit(FACTS[:1], progress=lambda stage, _f: seen.append(stage))
    z_reports = seen.count("z")
    assert z_reports >= steps, seen  # at least one report per step (early stop aside: none)

    stopped_at: list[str] = []

    def cancel_at_third_step(stage: str, _fraction: float) -> None:
        stopped_at.append(stage)
        if stopped_at.count("z") == 3:
            raise JobCancelled("cancelled")

    fresh = Editor(model, tok, hparams=hp, model_name="tiny", cache_dir=tmp_path, corpus=corpus)
    with pytest.raises(JobCancelled):
        fresh.edit(FACTS[:1], progress=cancel_at_third_step)
    assert stopped_at.count("z") == 3 and "solve" not in stopped_at
