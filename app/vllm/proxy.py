"""Forward OpenAI requests to vLLM with ``model`` resolved, and its answers back with
``model`` the version that answered: one URL for the user, one shape whatever engine speaks.

The request stays a dict: fields vLLM takes beyond OpenAI's (``top_k``, ``prompt_logprobs``)
pass through untouched, and the request/response models stay in the service's one OpenAI
protocol module (the caller validates there, then hands the dict here). Only what the proxy
itself needs is checked: ``model``, ``stream`` and the presence of ``messages``/``prompt``.

``model`` is resolved on every request: ``active`` to the active version's adapter, ``v0`` to
the base model, ``vN`` to its adapter (loaded on first use if evicted). A rollback moves only
this alias: nothing is reloaded anywhere. vLLM answers with its own names (``v3-1a2b…``, the
base model's); every answer and every streamed event is rewritten to the version (``v3``).
Errors are raised as :class:`app.api.openai.errors.OpenAIError`, in OpenAI's shape.

Prompt log-probabilities (``echo`` with ``logprobs``, or ``prompt_logprobs``) are sent one at a
time: with ``--enable-lora``, vLLM 0.32's CPU engine dies when several run at once (issue 24:
8 concurrent ones gave 7 HTTP 500s and an ``EngineDeadError`` for every later request).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.concurrency import run_in_threadpool

from app.api.openai.cards import answering_version
from app.api.openai.errors import OpenAIError
from app.store import VersionStore
from app.vllm.adapters import AdapterSync, NotServable
from app.vllm.client import VllmUnavailable

ACTIVE = "active"
log = logging.getLogger(__name__)


def unavailable(detail: str) -> OpenAIError:
    """503 + ``Retry-After``; ``detail`` (which may name vLLM's URL or the server's paths)
    goes to the log, never to the client."""
    log.warning("vLLM unavailable: %s", detail)
    return OpenAIError(
        503, "vLLM, the engine that serves this model, is unavailable; edits and versions "
        "still work and vLLM catches up when it is back. Retry shortly.", None,
        "vllm_unavailable", {"Retry-After": "2"})


def refused(status: int, text: str) -> OpenAIError:
    """vLLM's own 4xx answer, in OpenAI's shape whichever of vLLM's shapes it came in
    (``{"error": {...}}``, the older flat ``{"object": "error", ...}``, FastAPI's
    ``{"detail": ...}``)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return OpenAIError(status, text[:500] or f"vLLM answered {status}")
    message = error.get("message") or error.get("detail") or f"vLLM answered {status}"
    param, code = error.get("param"), error.get("code")
    return OpenAIError(status, str(message), param if isinstance(param, str) else None,
                       code if isinstance(code, str) else None)


class _Once:
    """Release a lock exactly once, whichever path gets there first."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def __call__(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class BadRequest(ValueError):
    """The request misses what the proxy needs; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def needs_serialising(body: dict[str, Any]) -> bool:
    """Requests for prompt log-probabilities, which must not run concurrently in vLLM."""
    logprobs = body.get("logprobs")
    echo_logprobs = bool(body.get("echo")) and logprobs is not None and logprobs is not False
    return echo_logprobs or body.get("prompt_logprobs") is not None


def check_request(kind: str, body: Any) -> None:
    """The minimum the proxy relies on; everything else is vLLM's (or the protocol's) to judge."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model is required: 'active', a version id such as 'v1', or 'v0' "
                         "for the base model (GET /v1/models lists them)", "model")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("stream must be true or false", "stream")
    field = "messages" if kind == "chat" else "prompt"
    if body.get(field) in (None, "", []):
        raise BadRequest(f"{field} is required", field)


@dataclass
class Answer:
    """vLLM's whole answer (JSON), ``model`` already the version that answered."""

    version: str
    body: dict[str, Any]


class Upstream:
    """vLLM's streamed answer: its events, each with ``model`` the version, until
    ``[DONE]``; :meth:`aclose` closes the connection and releases the serialisation lock
    (idempotent, and needed even for a stream never read)."""

    def __init__(self, response: httpx.Response, version: str,
                 release: Callable[[], None] | None) -> None:
        self.response = response
        self.version = version
        self._release = release

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        async for line in self.response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, vLLM's own comments
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if isinstance(event, dict) and "model" in event:
                event["model"] = self.version
            yield event

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            _done(self._release)
            self._release = None


class VllmProxy:
    """The OpenAI routes' forwarding layer when ``MODELEDIT_VLLM_URL`` is set."""

    def __init__(self, url: str, api_key: str | None, sync: AdapterSync,
                 store: VersionStore, timeout_s: float = 600.0) -> None:
        self.sync = sync
        self.store = store
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=2.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self._serial = asyncio.Lock()
        self.serialised = 0
        self.serial_wait_s = 30.0
        """How long a prompt-logprob request waits for the one running before a 429."""

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def serial_busy(self) -> bool:
        """A prompt-logprob request holds the one-at-a-time lock now."""
        return self._serial.locked()

    # -- model names ------------------------------------------------------------------------
    def resolve(self, model: str) -> tuple[str, str]:
        """The committed version ``model`` means now and the name vLLM knows it by; a 404
        as the embedded engine gives otherwise. vLLM's own names for our versions (the base
        model's, an adapter's) are taken too, and answer as their version."""
        version = self.store.active_version() if model == ACTIVE else model
        if model in (self.sync.base_name, *self.sync.served_names()):
            version = self.sync.version_of(model) or version  # a name this sync never gave: 404
        answering_version(self.store, model, version)
        return version, self.sync.ensure(version)

    # -- forwarding -------------------------------------------------------------------------
    async def forward(self, kind: str, body: Any) -> Answer | Upstream:
        """Send a ``chat`` or ``completions`` request to vLLM; the answer whole, or its
        stream if asked. Raises :class:`OpenAIError`.

        ``body``: the request as a dict, validated by the protocol module (the fields the
        client set, extra ones included where the model allows them).
        """
        try:
            check_request(kind, body)
        except BadRequest as exc:
            raise OpenAIError(400, str(exc), exc.param, "invalid_value") from exc
        try:
            version, name = await run_in_threadpool(self.resolve, body["model"])
        except NotServable as exc:
            raise OpenAIError(409, str(exc), "model", "model_not_servable") from exc
        except VllmUnavailable as exc:
            raise unavailable(str(exc)) from exc
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        request = {**body, "model": name}
        if not needs_serialising(request):
            return await self._send(path, request, version)
        try:  # a bounded wait: a queue of these must not hold clients for minutes
            await asyncio.wait_for(self._serial.acquire(), self.serial_wait_s)
        except TimeoutError:
            raise OpenAIError(
                429, "requests for prompt log-probabilities run one at a time on vLLM and "
                "another is running; retry shortly", None, "serialised_busy",
                {"Retry-After": "1"}) from None
        self.serialised += 1
        release = _Once(self._serial.release)
        try:  # released on every path: an error, a cancelled request, a stream never read
            return await self._send(path, request, version, release=release)
        except BaseException:
            release()
            raise

    async def _send(self, path: str, body: dict[str, Any], version: str,
                    release: Callable[[], None] | None = None) -> Answer | Upstream:
        try:
            upstream = await self._http.send(self._http.build_request("POST", path, json=body),
                                             stream=True)
        except httpx.HTTPError as exc:
            _done(release)
            self.sync.kick()
            raise unavailable(type(exc).__name__) from exc
        if upstream.status_code >= 500:
            text = (await upstream.aread()).decode(errors="replace")
            await upstream.aclose()
            _done(release)
            self.sync.kick()
            log.warning("vLLM answered %s: %s", upstream.status_code, text[:500])
            raise unavailable(f"it answered {upstream.status_code}")
        if body.get("stream") and upstream.status_code == 200:
            return Upstream(upstream, version, release)
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:  # the connection broke mid-answer: vLLM died
            self.sync.kick()
            raise unavailable(type(exc).__name__) from exc
        finally:
            await upstream.aclose()
            _done(release)
        text = content.decode(errors="replace")
        if upstream.status_code != 200:
            raise refused(upstream.status_code, text)
        try:
            answer = json.loads(text)
        except ValueError as exc:
            raise bad_answer(text) from exc
        if not isinstance(answer, dict):
            raise bad_answer(text)
        return Answer(version, {**answer, "model": version})


def bad_answer(detail: str) -> OpenAIError:
    """vLLM answered something that is not OpenAI's shape (logged, not sent)."""
    log.warning("vLLM's answer is not OpenAI's shape: %s", detail[:500])
    return OpenAIError(502, "vLLM answered something that is not in OpenAI's shape; retry, "
                       "and report it if it persists", None, "bad_upstream_answer")


def _done(release: Callable[[], None] | None) -> None:
    if release is not None:
        release()
