"""``/score``, ``/generate``, ``/next-tokens``: ask the model, on the active or a named version.

Handlers are ``async``: they tokenize, submit to the batch engine and await its answer
(:mod:`app.serving.queries`), so a waiting query holds no thread of the server's pool and
``/health`` never waits behind queries. The engine answers every query of this process in
shared forward passes, each row on its own version's weights. Every query has a deadline
(504) and a client that disconnects cancels its rows.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Depends
from fastapi import Request as HttpRequest
from fastapi.concurrency import run_in_threadpool

from app.api.deps import get_parts
from app.api.errors import ApiError
from app.api.schemas import (
    CandidateScore,
    ErrorOut,
    GenerateIn,
    GenerateOut,
    NextTokensIn,
    NextTokensOut,
    ScoreIn,
    ScoreOut,
    TokenProb,
)
from app.api.security import require_read
from app.api.waiting import watch
from app.services import ModelParts
from app.serving import queries
from app.serving.delta_source import UnusableDelta
from app.serving.engine import EngineStopped, QueueFull, ServingEngine, TooLarge
from app.serving.queries import ClientGone, DeadlineExceeded, EngineFailed, Watch
from app.store import NotFound
from editing import prompt_ids

router = APIRouter(tags=["query"])
T = TypeVar("T")

RESPONSES = {
    404: {"model": ErrorOut, "description": "unknown version"},
    409: {"model": ErrorOut, "description": "the version's weights cannot be built"},
    422: {"model": ErrorOut, "description": "invalid input; the message names the field"},
    429: {"model": ErrorOut, "description": "too many queries in flight; see Retry-After"},
    503: {"model": ErrorOut, "description": "the engine is stopping or failed; see Retry-After"},
    504: {"model": ErrorOut, "description": "no answer within MODELEDIT_QUERY_TIMEOUT_S"},
}


def _check_version(parts: ModelParts, version: str | None) -> None:
    if version is None:
        return
    try:
        record = parts.store.get_version(version)
    except NotFound as exc:
        raise ApiError(404, str(exc), field="version") from exc
    if record.state != "committed":
        raise ApiError(409, f"version {version} is {record.state}; ask another version",
                       field="version")


async def _checked_ids(parts: ModelParts, prompt: str, extra: int = 0) -> list[int]:
    """The prompt's token ids; one with no token, or longer than the model's context, would
    fail inside the engine: say so here. Tokenised in a worker thread: a prompt near the body
    limit takes a third of a second, which on the event loop would hold every request,
    /health included."""
    ids = await run_in_threadpool(prompt_ids, parts.lm.tokenizer, prompt)
    n = len(ids)
    if n == 0:
        raise ApiError(422, "prompt yields no tokens; give some text", field="prompt")
    limit = getattr(parts.lm.model.config, "max_position_embeddings", None)
    if limit is not None and n + extra > limit:
        raise ApiError(422, f"prompt is {n} tokens (+{extra} to generate); the model takes at "
                       f"most {limit}", field="prompt")
    return ids


async def _engine_call(parts: ModelParts, version: str | None, http: HttpRequest,
                       ask: Callable[[ServingEngine, str, Watch], Awaitable[T]]
                       ) -> tuple[str, T]:
    """``ask(engine, resolved version, watch)`` on the batch engine, its failures as HTTP."""
    engine = parts.engine
    if engine is None:
        raise ApiError(503, "this process has no generation engine",
                       headers={"Retry-After": "5"})
    _check_version(parts, version)
    resolved = engine.resolve(version)
    try:
        return resolved, await ask(engine, resolved, watch(http))
    except UnusableDelta as exc:
        raise ApiError(409, str(exc), field="version") from exc
    except TooLarge as exc:
        raise ApiError(422, str(exc)) from exc
    except ValueError as exc:  # a row the engine cannot take (no prompt token)
        raise ApiError(422, str(exc), field="prompt") from exc
    except QueueFull as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    except EngineStopped as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from exc
    except DeadlineExceeded as exc:
        raise ApiError(504, str(exc)) from exc
    except ClientGone as exc:
        raise ApiError(499, "client disconnected") from exc
    except EngineFailed as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from exc


@router.post("/score", response_model=ScoreOut, responses=RESPONSES,
             summary="Log-probability of each candidate continuation after the prompt")
async def score(
    body: ScoreIn, http: HttpRequest, parts: ModelParts = Depends(get_parts),
    _who: str = Depends(require_read),
) -> ScoreOut:
    """Sum of the token log-probs of `" " + candidate` after `prompt` (the edits' leading-space
    rule). Compare candidates to see which answer the model prefers."""
    await _checked_ids(parts, prompt=body.prompt + " " + max(body.candidates, key=len))
    version, results = await _engine_call(parts, body.version, http, lambda e, v, w: queries.score(
        e, v, body.prompt, body.candidates, w))
    return ScoreOut(version=version, scores=[
        CandidateScore(candidate=c, logprob=lp, tokens=n)
        for c, (lp, n) in zip(body.candidates, results, strict=True)])


@router.post("/generate", response_model=GenerateOut, responses=RESPONSES,
             summary="Greedy continuation of the prompt")
async def generate(
    body: GenerateIn, http: HttpRequest, parts: ModelParts = Depends(get_parts),
    _who: str = Depends(require_read),
) -> GenerateOut:
    ids = await _checked_ids(parts, body.prompt, body.max_new_tokens)
    version, text = await _engine_call(parts, body.version, http, lambda e, v, w: queries.generate(
        e, v, ids, body.max_new_tokens, w))
    return GenerateOut(version=version, text=text)


@router.post("/next-tokens", response_model=NextTokensOut, responses=RESPONSES,
             summary="The k likeliest next tokens")
async def next_tokens(
    body: NextTokensIn, http: HttpRequest, parts: ModelParts = Depends(get_parts),
    _who: str = Depends(require_read),
) -> NextTokensOut:
    ids = await _checked_ids(parts, body.prompt)
    version, top = await _engine_call(parts, body.version, http, lambda e, v, w: (
        queries.next_tokens(e, v, ids, body.k, w)))
    return NextTokensOut(
        version=version,
        tokens=[TokenProb(token=t, id=i, logprob=lp, prob=math.exp(lp)) for t, i, lp in top],
    )
