"""``/score``, ``/generate``, ``/next-tokens``: ask the model, on the active or a named version.

Endpoints are plain ``def``: FastAPI runs them in its thread pool while they wait for the
batch engine (:mod:`app.serving.queries`), which answers every query of this process in
shared forward passes, each row on its own version's weights. A process without an engine
(none today) falls back to a forward pass of its own under the runtime's lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from fastapi import APIRouter, Depends

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
from app.services import ModelParts
from app.serving import inference, queries
from app.serving.delta_source import UnusableDelta
from app.serving.engine import QueueFull, ServingEngine
from app.serving.queries import EngineFailed
from app.serving.runtime import Served
from app.store import NotFound
from editing.forward.tokens import prompt_ids

router = APIRouter(tags=["query"])
T = TypeVar("T")

RESPONSES = {
    404: {"model": ErrorOut, "description": "unknown version"},
    409: {"model": ErrorOut, "description": "the version's weights cannot be built"},
    422: {"model": ErrorOut, "description": "invalid input; the message names the field"},
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


def _check_length(parts: ModelParts, prompt: str, extra: int = 0) -> None:
    """A prompt longer than the model's context would fail inside the model: say so here."""
    limit = getattr(parts.lm.model.config, "max_position_embeddings", None)
    if limit is None:
        return
    n = len(prompt_ids(parts.lm.tokenizer, prompt))
    if n + extra > limit:
        raise ApiError(422, f"prompt is {n} tokens (+{extra} to generate); the model takes at "
                       f"most {limit}", field="prompt")


def _engine_call(parts: ModelParts, version: str | None, ask: Callable[[ServingEngine, str], T]
                 ) -> tuple[str, T] | None:
    """``ask(engine, resolved version)`` on the batch engine; None when there is none."""
    engine = parts.engine
    if engine is None:
        return None
    _check_version(parts, version)
    resolved = engine.resolve(version)
    try:
        return resolved, ask(engine, resolved)
    except UnusableDelta as exc:
        raise ApiError(409, str(exc), field="version") from exc
    except QueueFull as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    except EngineFailed as exc:
        raise ApiError(503, str(exc)) from exc


@contextmanager
def _serving(parts: ModelParts, version: str | None) -> Iterator[Served]:
    """The model at ``version``; a delta in its chain that cannot be applied is a 409."""
    _check_version(parts, version)
    try:
        with parts.runtime.serving(version) as served:
            yield served
    except UnusableDelta as exc:
        raise ApiError(409, str(exc), field="version") from exc


@router.post("/score", response_model=ScoreOut, responses=RESPONSES,
             summary="Log-probability of each candidate continuation after the prompt")
def score(
    body: ScoreIn, parts: ModelParts = Depends(get_parts), _who: str = Depends(require_read)
) -> ScoreOut:
    """Sum of the token log-probs of `" " + candidate` after `prompt` (the edits' leading-space
    rule). Compare candidates to see which answer the model prefers."""
    _check_length(parts, prompt=body.prompt + " " + max(body.candidates, key=len))
    answered = _engine_call(parts, body.version,
                            lambda e, v: queries.score(e, v, body.prompt, body.candidates))
    if answered is not None:
        return ScoreOut(version=answered[0], scores=[
            CandidateScore(candidate=c, logprob=lp, tokens=n)
            for c, (lp, n) in zip(body.candidates, answered[1], strict=True)])
    with _serving(parts, body.version) as served:
        results = inference.score(served.model, served.tokenizer, body.prompt,
                                  body.candidates)
    return ScoreOut(
        version=served.version,
        scores=[CandidateScore(candidate=c, logprob=lp, tokens=n)
                for c, (lp, n) in zip(body.candidates, results, strict=True)],
    )


@router.post("/generate", response_model=GenerateOut, responses=RESPONSES,
             summary="Greedy continuation of the prompt")
def generate(
    body: GenerateIn,
    parts: ModelParts = Depends(get_parts),
    _who: str = Depends(require_read),
) -> GenerateOut:
    _check_length(parts, body.prompt, body.max_new_tokens)
    answered = _engine_call(parts, body.version, lambda e, v: queries.generate(
        e, v, body.prompt, body.max_new_tokens))
    if answered is not None:
        return GenerateOut(version=answered[0], text=answered[1])
    with _serving(parts, body.version) as served:
        text = inference.generate(served.model, served.tokenizer, body.prompt,
                                  body.max_new_tokens)
    return GenerateOut(version=served.version, text=text)


@router.post("/next-tokens", response_model=NextTokensOut, responses=RESPONSES,
             summary="The k likeliest next tokens")
def next_tokens(
    body: NextTokensIn,
    parts: ModelParts = Depends(get_parts),
    _who: str = Depends(require_read),
) -> NextTokensOut:
    _check_length(parts, body.prompt)
    answered = _engine_call(parts, body.version,
                            lambda e, v: queries.next_tokens(e, v, body.prompt, body.k))
    if answered is not None:
        version, top = answered
    else:
        with _serving(parts, body.version) as served:
            top = inference.next_tokens(served.model, served.tokenizer, body.prompt, body.k)
        version = served.version
    return NextTokensOut(
        version=version,
        tokens=[TokenProb(token=t, id=i, logprob=lp, prob=math.exp(lp)) for t, i, lp in top],
    )
