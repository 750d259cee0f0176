"""The serving engine's in-flight count cannot leak: a failure at each step of admission
leaves nothing counted, and every way a request ends (answer, error, cancellation, deadline,
disconnect, a failed step, a failing hook, shutdown) releases it exactly once.

The engine's loop is held still, where a test needs requests to stay in flight, by holding
the runtime's write lock (each step takes the read lock), and released on observed state:
no sleeps, no timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from app.serving.additive import AdditiveRuntime
from app.serving.delta_source import UnusableDelta
from app.serving.engine import STOPPING, EngineStopped, QueueFull, ServingEngine, TooLarge
from app.serving.queries import ClientGone, DeadlineExceeded, Watch, run
from app.serving.runtime import Chain
from bench.tiny import tiny_model, tiny_tokenizer
from models.generate import Request, SamplingParams
from models.load import LoadedModel
from tests.e2e.harness import wait_for

BOUND = 8


def chain(version: str) -> Chain:
    if version != "v0":
        raise UnusableDelta(f"version {version}'s delta file is unreadable")
    return []


@pytest.fixture
def engine() -> Iterator[ServingEngine]:
    tokenizer = tiny_tokenizer("bos")
    lm = LoadedModel(tiny_model("llama", vocab_size=len(tokenizer)), tokenizer, "tiny")
    serving = ServingEngine(AdditiveRuntime(lm, "v0", chain), max_queue=BOUND, max_rows=4,
                            window_s=0.0).start()
    yield serving
    serving.stop()
    assert serving.in_flight == 0


def rows(engine: ServingEngine, n: int, max_tokens: int = 2) -> list[Request]:
    ids = list(engine.batch.tokenizer("The capital of France is").input_ids)
    return [Request(ids, SamplingParams(max_tokens=max_tokens, temperature=0.0))
            for _ in range(n)]


def settled(engine: ServingEngine) -> None:
    wait_for(lambda: engine.in_flight == 0 and not engine.batch.has_work(),
             what="the in-flight count back at zero")


def test_answers_release_their_rows(engine: ServingEngine) -> None:
    requests = rows(engine, 5)
    engine.submit("v0", requests)
    wait_for(lambda: all(r.finished for r in requests), what="answers")
    assert {r.finish_reason for r in requests} <= {"stop", "length"}
    settled(engine)


def test_each_failing_admission_step_counts_nothing(engine: ServingEngine,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TooLarge, match=f"at most {BOUND}"):  # never fits
        engine.submit("v0", rows(engine, BOUND + 1))
    with pytest.raises(UnusableDelta):  # the version's additions cannot be built
        engine.submit("v9", rows(engine, 3))
    empty = [*rows(engine, 2), Request([], SamplingParams(max_tokens=1))]
    with pytest.raises(ValueError, match="prompt token"):  # one row the engine cannot take
        engine.submit("v0", empty)
    assert engine.in_flight == 0 and engine.batch.pending == 0

    calls = [0]
    prepare = engine.batch.prepare

    def failing_prepare(request: Request) -> None:  # the third row's preparation fails
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("injected")
        prepare(request)

    monkeypatch.setattr(engine.batch, "prepare", failing_prepare)
    with pytest.raises(RuntimeError, match="injected"):
        engine.submit("v0", rows(engine, 4))
    assert engine.in_flight == 0 and engine.batch.pending == 0  # all or none
    monkeypatch.undo()
    requests = rows(engine, 3)  # and the engine still answers
    engine.submit("v0", requests)
    wait_for(lambda: all(r.finished for r in requests), what="answers")
    settled(engine)


def test_a_full_queue_refuses_without_counting(engine: ServingEngine) -> None:
    with engine.runtime.exclusive("v0"):  # the loop cannot step: rows stay in flight
        held = rows(engine, BOUND - 2)
        engine.submit("v0", held)
        assert engine.in_flight == BOUND - 2
        with pytest.raises(QueueFull, match="in flight"):
            engine.submit("v0", rows(engine, 3))
        assert engine.in_flight == BOUND - 2
    wait_for(lambda: all(r.finished for r in held), what="answers")
    settled(engine)


def test_cancelled_rows_are_released(engine: ServingEngine) -> None:
    with engine.runtime.exclusive("v0"):
        requests = rows(engine, 4, max_tokens=50)
        engine.submit("v0", requests)
        for r in requests:
            r.cancel()
    wait_for(lambda: all(r.finished for r in requests), what="cancellations")
    assert {r.finish_reason for r in requests} == {"cancelled"}
    settled(engine)


@pytest.mark.parametrize("leave", ["deadline", "disconnect"])
def test_a_query_that_gives_up_releases_its_rows(engine: ServingEngine, leave: str) -> None:
    async def gone() -> None:
        return None

    watch = Watch(0.05) if leave == "deadline" else Watch(3600, gone)
    expected = DeadlineExceeded if leave == "deadline" else ClientGone
    requests = rows(engine, 3, max_tokens=50)
    with engine.runtime.exclusive("v0"):  # no answer can come before the query gives up
        with pytest.raises(expected):
            asyncio.run(run(engine, "v0", requests, watch))
        assert all(r.cancelled for r in requests)
    settled(engine)


@pytest.mark.parametrize("where", ["step", "_prefill", "_decode"])
def test_a_failing_step_releases_every_row(engine: ServingEngine, where: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever a step fails (before admitting, while rows are neither pending nor running,
    while decoding), every row ends with an error and is released."""
    original = getattr(engine.batch, where)
    failed = [False]

    def failing(*args: object) -> object:
        if not failed[0]:
            failed[0] = True
            raise RuntimeError(f"injected failure in {where}")
        return original(*args)

    monkeypatch.setattr(engine.batch, where, failing)
    requests = rows(engine, 3, max_tokens=4)
    engine.submit("v0", requests)
    wait_for(lambda: all(r.finished for r in requests), what="failed requests")
    assert {r.finish_reason for r in requests} == {"error"}
    settled(engine)


def test_a_failing_hook_fails_nobody(engine: ServingEngine) -> None:

    def raising_hook(r: Request) -> None:
        raise RuntimeError("a caller's hook failed")

    requests = rows(engine, 3)
    for r in requests[:1]:
        r.on_update = raising_hook
    engine.submit("v0", requests)
    wait_for(lambda: all(r.finished for r in requests), what="requests with failing hooks")
    assert {r.finish_reason for r in requests} <= {"stop", "length"}
    settled(engine)


def test_shutdown_finishes_what_is_in_flight_and_refuses_the_rest(
        engine: ServingEngine) -> None:
    stopper = threading.Thread(target=engine.stop)
    with engine.runtime.exclusive("v0"):
        requests = rows(engine, 4, max_tokens=50)
        engine.submit("v0", requests)
        stopper.start()
        wait_for(lambda: not engine.alive, what="the engine to begin stopping")
        with pytest.raises(EngineStopped):
            engine.submit("v0", rows(engine, 1))
    stopper.join(60)
    assert all(r.finished for r in requests)
    assert engine.in_flight == 0


def test_draining_refuses_new_rows_and_ends_the_rest_after_the_grace(
        engine: ServingEngine) -> None:
    with engine.runtime.exclusive("v0"):
        requests = rows(engine, 3, max_tokens=50)
        engine.submit("v0", requests)
        engine.drain(0.0)  # the grace is over before the loop can step again
        assert not engine.alive and engine.draining
        with pytest.raises(EngineStopped, match="stopping"):
            engine.submit("v0", rows(engine, 1))
    wait_for(lambda: all(r.finished for r in requests), what="drained requests")
    assert {r.error for r in requests} == {STOPPING}
    settled(engine)


def test_within_the_grace_what_is_in_flight_finishes(engine: ServingEngine) -> None:
    with engine.runtime.exclusive("v0"):
        requests = rows(engine, 3, max_tokens=4)
        engine.submit("v0", requests)
        engine.drain(3600.0)
    wait_for(lambda: all(r.finished for r in requests), what="answers")
    assert {r.finish_reason for r in requests} <= {"stop", "length"}
    settled(engine)
