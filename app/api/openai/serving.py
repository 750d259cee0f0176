"""OpenAI requests to engine requests and back: tokens in, choices, chunks and usage out.

Each prompt × ``n`` becomes one :class:`models.generate.Request`; all of a call's requests
are submitted together on one version (``active`` resolved once, here), and answers are
gathered from the engine thread through an asyncio queue, so waiting costs no thread.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request as HttpRequest
from jinja2 import TemplateError

from app.api.openai.errors import OpenAIError
from app.api.openai.protocol import ChatRequest, CompletionRequest, ModelCard
from app.api.waiting import watch
from app.services import Services
from app.serving.delta_source import UnusableDelta
from app.serving.engine import EngineStopped, QueueFull, ServingEngine, TooLarge
from app.serving.queries import ClientGone, DeadlineExceeded, settle
from app.store import NotFound
from editing import prompt_ids
from models.generate import BadMessages, NoChatTemplate, Request, SamplingParams, render_chat

VERSION_HEADER = "X-Modeledit-Version"
ENGINE = "embedded"


# -- models ----------------------------------------------------------------------------------
def _created(stamp: str) -> int:
    try:
        from datetime import datetime

        return int(datetime.fromisoformat(stamp).timestamp())
    except (TypeError, ValueError):
        return 0


def model_cards(services: Services) -> list[ModelCard]:
    """Every committed version (held ones too), then ``active`` and the base model's name."""
    runtime, active = services.runtime, services.runtime.active
    cards = []
    for v in services.store.list_versions():
        if v.state != "committed":
            continue
        cards.append(ModelCard(id=v.id, created=_created(v.created_at), root=v.id,
                               parent=v.parent, state=v.shown_state, active=v.id == active))
    by_id = {c.id: c for c in cards}
    for alias, target in (("active", active), (services.parts.lm.name, runtime.base_id)):
        if target in by_id and alias not in by_id:
            cards.append(by_id[target].model_copy(update={"id": alias}))
    return cards


def resolve_model(services: Services, engine: ServingEngine, name: str) -> str:
    """The committed version ``name`` means now; 404 in OpenAI's terms otherwise."""
    version = engine.resolve(name)
    if name == services.parts.lm.name:
        version = services.runtime.base_id
    try:
        record = services.store.get_version(version)
    except NotFound as exc:
        raise OpenAIError(404, f"The model '{name}' does not exist; GET /v1/models lists the "
                          "versions", "model", "model_not_found") from exc
    if record.state != "committed":
        raise OpenAIError(404, f"The model '{name}' is a {record.state} version, which cannot "
                          "answer; ask a committed one", "model", "model_not_found")
    return version


# -- requests -------------------------------------------------------------------------------
def _prompts(services: Services, body: CompletionRequest) -> list[list[int]]:
    """Each prompt's token ids; one that yields no token is a 400 (before anything is
    submitted: the engine cannot continue nothing)."""
    tokenizer = services.parts.lm.tokenizer
    prompt = body.prompt
    if isinstance(prompt, str):
        prompts = [prompt_ids(tokenizer, prompt)]
    elif all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]  # type: ignore[arg-type]
    else:
        prompts = [prompt_ids(tokenizer, p) if isinstance(p, str) else list(p) for p in prompt]
    for i, ids in enumerate(prompts):
        if not ids:
            where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
            raise OpenAIError(400, f"{where} yields no tokens; give some text", "prompt",
                              "invalid_value")
    return prompts


def _check_ids(services: Services, ids: list[int], param: str) -> None:
    vocab = services.parts.lm.model.get_input_embeddings().weight.shape[0]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise OpenAIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                          param, "invalid_value")


def _budget(services: Services, prompts: list[list[int]], asked: int | None, param: str,
            prompt_param: str) -> int:
    """``max_tokens`` to use: the request's, within the cap and the model's context."""
    cap = services.settings.max_tokens_cap
    context = int(getattr(services.parts.lm.model.config, "max_position_embeddings", 0) or 0)
    longest = max(len(p) for p in prompts)
    if asked is not None and asked > cap:
        raise OpenAIError(400, f"{param} is {asked}; this server's cap is {cap}", param,
                          "invalid_value")
    want = asked if asked is not None else min(cap, max(0, context - longest) if context else cap)
    if context and longest + want > context:
        raise OpenAIError(400, f"This model's maximum context length is {context} tokens. "
                          f"However, you requested {longest + want} tokens ({longest} in the "
                          f"prompt, {want} for the completion). Shorten the prompt or lower "
                          f"{param}.", prompt_param, "context_length_exceeded")
    return want


def _params(body: CompletionRequest | ChatRequest, max_tokens: int, logprobs: int | None,
            echo: bool, index: int) -> SamplingParams:
    seed = None if body.seed is None else (body.seed + index) % 2**63
    return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                          seed=seed, stop=body.stops(), logprobs=logprobs,
                          prompt_logprobs=echo and logprobs is not None,
                          ignore_eos=body.ignore_eos)


@dataclass
class Call:
    """The engine requests of one API call and where their updates arrive."""

    version: str
    requests: list[Request]
    prompt_index: list[int]
    updates: asyncio.Queue[tuple[int, str, str | None]]

    def cancel(self) -> None:
        for r in self.requests:
            r.cancel()


def submit(engine: ServingEngine, version: str, prompts: list[list[int]], n: int,
           make_params: Callable[[int], SamplingParams]) -> Call:
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[tuple[int, str, str | None]] = asyncio.Queue()
    requests, index = [], []
    for p, ids in enumerate(prompts):
        for j in range(n):
            i = len(requests)

            def on_update(r: Request, i: int = i) -> None:
                assert r.tracker is not None
                item = (i, r.tracker.stable(final=r.finished), r.finish_reason)
                loop.call_soon_threadsafe(updates.put_nowait, item)

            requests.append(Request(ids, make_params(j), on_update=on_update))
            index.append(p)
    try:
        engine.submit(version, requests)
    except TooLarge as exc:
        raise OpenAIError(400, str(exc), "n", "too_many_generations") from exc
    except QueueFull as exc:
        raise OpenAIError(429, str(exc), None, "queue_full",
                          {"Retry-After": str(exc.retry_after)}) from exc
    except EngineStopped as exc:
        raise OpenAIError(503, str(exc), None, "service_stopping", {"Retry-After": "5"}) from exc
    except UnusableDelta as exc:
        raise OpenAIError(409, str(exc), "model", "version_unusable") from exc
    except ValueError as exc:  # a request the engine cannot take (checked before, kept safe)
        raise OpenAIError(400, str(exc), "prompt", "invalid_value") from exc
    return Call(version, requests, index, updates)


async def wait_all(call: Call, http: HttpRequest) -> None:
    """Until every request finished; the deadline (504) or a client that disconnects
    cancels them."""

    async def drain() -> None:
        left = sum(1 for r in call.requests if not r.finished)
        while left:
            _, _, reason = await call.updates.get()
            if reason is not None:
                left -= 1

    try:
        await settle(drain(), call.requests, watch(http))
    except DeadlineExceeded as exc:
        raise OpenAIError(504, str(exc), None, "timeout") from exc
    except ClientGone:
        raise OpenAIError(499, "client disconnected") from None
    failed = [r for r in call.requests if r.finish_reason == "error"]
    if failed:
        raise OpenAIError(503, failed[0].error or "generation failed", None, "engine_error",
                          {"Retry-After": "1"})


def finish(reason: str | None) -> str | None:
    return None if reason is None else "stop" if reason == "stop" else "length"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(call: Call, prompts: list[list[int]]) -> dict[str, int]:
    prompt_tokens = sum(len(p) for p in prompts)
    completion = sum(len(r.output_ids) for r in call.requests)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _error_event(message: str, code: str) -> str:
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return f"data: {json.dumps(error)}\n\n"


async def stream_events(call: Call, chunk: Callable[[int, str, str | None], dict[str, Any]],
                        final_usage: Callable[[], dict[str, Any] | None], timeout_s: float,
                        first: list[dict[str, Any]] | None = None) -> AsyncIterator[str]:
    """Server-sent events: text deltas per choice as tokens arrive, then ``[DONE]``.
    Leaving early (the client went away) or passing the deadline cancels the generation."""
    sent = [""] * len(call.requests)
    left = len(call.requests)
    deadline = time.monotonic() + timeout_s
    try:
        for event in first or []:
            yield f"data: {json.dumps(event)}\n\n"
        while left:
            try:
                i, text, reason = await asyncio.wait_for(call.updates.get(),
                                                         max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                yield _error_event(f"no answer within {timeout_s:g} s (the server's deadline "
                                   "for one query)", "timeout")
                return
            if reason == "error":
                yield _error_event(call.requests[i].error or "generation failed", "engine_error")
                return
            delta = text[len(sent[i]):] if text.startswith(sent[i]) else ""
            if delta or reason is not None:
                sent[i] = text if text.startswith(sent[i]) else sent[i]
                yield f"data: {json.dumps(chunk(i, delta, finish(reason)))}\n\n"
            if reason is not None:
                left -= 1
        extra = final_usage()
        if extra is not None:
            yield f"data: {json.dumps(extra)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        call.cancel()


def now() -> int:
    return int(time.time())


def chat_prompt(services: Services, body: ChatRequest) -> list[int]:
    """The conversation's token ids under the model's chat template; a template that fails
    on these messages (its own ``raise_exception``, a role order it refuses) is a 400, and
    a rendering with no token too."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(),
                 **({"name": m.name} if m.name is not None else {})} for m in body.messages]
    try:
        ids = render_chat(services.parts.lm.tokenizer, messages)
    except NoChatTemplate as exc:
        raise OpenAIError(400, f"{exc}", "model", "no_chat_template") from exc
    except BadMessages as exc:
        raise OpenAIError(400, str(exc), "messages", "invalid_value") from exc
    except TemplateError as exc:
        raise OpenAIError(400, f"the model's chat template refused these messages: {exc}",
                          "messages", "invalid_value") from exc
    if not ids:
        raise OpenAIError(400, "messages yield no tokens under the model's chat template",
                          "messages", "invalid_value")
    return ids
