"""What the embedded engine's serving objects share (vLLM's ``serving_engine.py``): OpenAI
requests to engine requests and back, tokens in, updates, finish reasons and usage out.

Each prompt × ``n`` becomes one :class:`models.generate.Request`; all of a call's requests
are submitted together on one version (``active`` resolved once, by
:class:`app.api.openai.serving_models.ServingModels`), and answers are gathered from the
engine thread through an asyncio queue, so waiting costs no thread.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request as HttpRequest
from fastapi.concurrency import run_in_threadpool
from jinja2 import TemplateError

from app.api.openai.backend import StreamError
from app.api.openai.errors import OpenAIError
from app.api.openai.protocol import ChatRequest, CompletionRequest
from app.api.waiting import watch
from app.serving.delta_source import UnusableDelta
from app.serving.engine import EngineStopped, QueueFull, ServingEngine, TooLarge
from app.serving.parts import ModelParts
from app.serving.queries import ClientGone, DeadlineExceeded, settle
from editing import prompt_ids
from models.generate import BadMessages, NoChatTemplate, Request, SamplingParams, render_chat

ENGINE = "embedded"


# -- requests -------------------------------------------------------------------------------
# Tokenising runs in a worker thread: a prompt near the body limit takes a third of a second,
# which on the event loop would hold every other request, /health included.
async def prompts_of(parts: ModelParts, body: CompletionRequest) -> list[list[int]]:
    """Each prompt's token ids; one that yields no token is a 400 (before anything is
    submitted: the engine cannot continue nothing)."""
    return await run_in_threadpool(_prompts_of, parts, body)


def _prompts_of(parts: ModelParts, body: CompletionRequest) -> list[list[int]]:
    tokenizer = parts.lm.tokenizer
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


def check_ids(parts: ModelParts, ids: list[int], param: str) -> None:
    vocab = parts.lm.model.get_input_embeddings().weight.shape[0]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise OpenAIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                          param, "invalid_value")


def model_context(parts: ModelParts) -> int:
    """The loaded model's own context length (0: unknown); what the embedded engine serves."""
    return int(getattr(parts.lm.model.config, "max_position_embeddings", 0) or 0)


def budget(context: int, cap: int, prompts: list[list[int]], asked: int | None,
           param: str, prompt_param: str) -> int:
    """``max_tokens`` to use: the request's, within the cap (over it: a 400 naming ``param``)
    and ``context``, the engine's context length (0: unknown); both backends apply it, each
    with its engine's context (vLLM may serve a shorter one than the model's)."""
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


def params(body: CompletionRequest | ChatRequest, max_tokens: int, logprobs: int | None,
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

    async def finished(self) -> None:
        """Return once every request has finished. Counting final updates instead would count
        twice a request that finished before this started (its update still queued); a
        request's reason is set before its final update is queued, so none is missed."""
        while not all(r.finished for r in self.requests):
            await self.updates.get()


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

    try:
        await settle(call.finished(), call.requests, watch(http))
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


@dataclass(frozen=True)
class Delta:
    """Text choice ``index`` added since its previous delta; ``finish_reason`` on its last."""

    index: int
    text: str
    finish_reason: str | None


async def deltas(call: Call, timeout_s: float) -> AsyncIterator[Delta | StreamError]:
    """Each choice's new text as tokens arrive; an error (the deadline, a failed generation)
    ends it. The caller cancels ``call`` when it stops reading (the stream's ``close``)."""
    sent = [""] * len(call.requests)
    left = len(call.requests)
    deadline = time.monotonic() + timeout_s
    while left:
        try:
            i, text, reason = await asyncio.wait_for(call.updates.get(),
                                                     max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            yield StreamError(f"no answer within {timeout_s:g} s (the server's deadline for "
                              "one query)", "timeout")
            return
        if reason == "error":
            yield StreamError(call.requests[i].error or "generation failed", "engine_error")
            return
        delta = text[len(sent[i]):] if text.startswith(sent[i]) else ""
        if delta or reason is not None:
            sent[i] = text if text.startswith(sent[i]) else sent[i]
            yield Delta(i, delta, finish(reason))
        if reason is not None:
            left -= 1


def now() -> int:
    return int(time.time())


def refuse_extra(body: CompletionRequest | ChatRequest) -> None:
    """Fields beyond OpenAI's are kept for vLLM (``top_k``, ...), which takes them; the
    embedded engine does not, so it names the first and refuses."""
    for name in body.model_extra or {}:
        raise OpenAIError(400, f"{name}: Extra inputs are not permitted (this field is not "
                          "OpenAI's and the embedded engine does not implement it; remove it)",
                          name, "unrecognized_field")


def engine_of(parts: ModelParts) -> ServingEngine:
    """The batch engine; 503 in a process that has none."""
    if parts.engine is None:
        raise OpenAIError(503, "this process has no generation engine", None, "no_engine",
                          {"Retry-After": "5"})
    return parts.engine


async def chat_prompt(parts: ModelParts, body: ChatRequest) -> list[int]:
    """The conversation's token ids under the model's chat template; a template that fails
    on these messages (its own ``raise_exception``, a role order it refuses) is a 400, and
    a rendering with no token too."""
    return await run_in_threadpool(_chat_prompt, parts, body)


def _chat_prompt(parts: ModelParts, body: ChatRequest) -> list[int]:
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(),
                 **({"name": m.name} if m.name is not None else {})} for m in body.messages]
    try:
        ids = render_chat(parts.lm.tokenizer, messages)
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
