"""``/score``, ``/generate`` and ``/next-tokens`` as engine requests, awaited without a thread.

They share the batch engine with the /v1 endpoints, so they batch across versions too. A
query is awaited on the event loop (the engine's thread resolves a future), so a thousand
waiting clients hold no thread of the server's pool and ``/health`` never queues behind them.
Every wait has a deadline and ends early when the client leaves; either way the query's rows
are cancelled and leave the engine at its next step. Scoring keeps the editor's
leading-space rule (:func:`editing.forward.tokens.continuation_ids`), so "the edit made the
target likelier" is still measured on the very tokens the edit optimised.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from app.serving.engine import ServingEngine
from editing import continuation_ids, prompt_ids
from models.generate import Request, SamplingParams


class EngineFailed(RuntimeError):
    """The engine could not answer (it is stopping, or a step failed)."""


class DeadlineExceeded(TimeoutError):
    """No answer within the query's deadline (``MODELEDIT_QUERY_TIMEOUT_S``)."""


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


@dataclass(frozen=True)
class Watch:
    """How long a query may take, and how to notice that its client left."""

    timeout_s: float
    gone: Callable[[], Awaitable[object]] | None = None
    """Returns once the client has disconnected (None: nobody to watch)."""


async def settle(done: Awaitable[object], requests: Sequence[Request], watch: Watch) -> None:
    """Await ``done``; on the deadline, a disconnect or cancellation (shutdown), cancel
    ``requests`` so the engine frees their rows, and raise what happened."""
    task = asyncio.ensure_future(done)
    watcher = asyncio.ensure_future(watch.gone()) if watch.gone is not None else None
    waiters = {task} if watcher is None else {task, watcher}
    try:
        finished, _ = await asyncio.wait(waiters, timeout=watch.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
    finally:
        if watcher is not None:
            watcher.cancel()
        if not task.done():
            task.cancel()
            for r in requests:
                r.cancel()
    if task in finished:
        task.result()
        return
    if watcher is not None and watcher in finished:
        raise ClientGone
    raise DeadlineExceeded(f"no answer within {watch.timeout_s:g} s (the server's deadline "
                           "for one query); retry later or ask for fewer tokens")


def all_finished(requests: Sequence[Request]) -> asyncio.Future[None]:
    """A future of the running loop that resolves once every request has finished; it hooks
    each request's ``on_update`` (called on the engine's thread)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left = [len(requests)]
    lock = threading.Lock()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def on_update(r: Request) -> None:
        if r.finished:
            with lock:
                left[0] -= 1
                last = not left[0]
            if last:
                loop.call_soon_threadsafe(resolve)

    for r in requests:
        r.on_update = on_update
    if not requests:
        resolve()
    return done


async def run(engine: ServingEngine, version: str, requests: list[Request],
              watch: Watch) -> list[Request]:
    """Submit ``requests`` and await them all (raises what ``submit`` raises, then
    :class:`DeadlineExceeded`, :class:`ClientGone` or :class:`EngineFailed`)."""
    done = all_finished(requests)
    engine.submit(version, requests)
    await settle(done, requests, watch)
    failed = [r for r in requests if r.finish_reason == "error"]
    if failed:
        raise EngineFailed(failed[0].error or "generation failed")
    return requests


async def score(engine: ServingEngine, version: str, prompt: str, candidates: list[str],
                watch: Watch) -> list[tuple[float, int]]:
    """(sum of token log-probs, token count) of ``" " + candidate`` after ``prompt``, each."""
    tokenizer = engine.batch.tokenizer
    head = prompt_ids(tokenizer, prompt)
    tails = [continuation_ids(tokenizer, prompt, c) for c in candidates]
    params = SamplingParams(max_tokens=0, prompt_logprobs=True, prompt_logprobs_from=len(head))
    done = await run(engine, version, [Request(head + tail, params) for tail in tails], watch)
    out = []
    for r, tail in zip(done, tails, strict=True):
        logprobs = [float(lp) for lp in r.prompt_logprobs[len(head):] if lp is not None]
        out.append((sum(logprobs), len(tail)))
    return out


async def generate(engine: ServingEngine, version: str, ids: list[int], max_new_tokens: int,
                   watch: Watch) -> str:
    """Greedy continuation (deterministic) of the prompt's token ids."""
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    return (await run(engine, version, [Request(ids, params)], watch))[0].text


async def next_tokens(engine: ServingEngine, version: str, ids: list[int], k: int,
                      watch: Watch) -> list[tuple[str, int, float]]:
    """The ``k`` likeliest next tokens after the prompt's token ids: (decoded text, id,
    log-prob)."""
    tokenizer = engine.batch.tokenizer
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=k, ignore_eos=True)
    request = (await run(engine, version, [Request(ids, params)], watch))[0]
    return [(tokenizer.decode([t]), t, lp) for t, lp in request.top_logprobs[0]]
