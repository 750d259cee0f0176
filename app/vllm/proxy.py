"""Forward OpenAI requests to vLLM with ``model`` resolved: one URL for the user.

The request stays a dict: fields vLLM takes beyond OpenAI's (``top_k``, ``prompt_logprobs``)
pass through untouched, and the request/response models stay in the service's one OpenAI
protocol module (the caller validates there, then hands the dict here). Only what the proxy
itself needs is checked: ``model``, ``stream`` and the presence of ``messages``/``prompt``.

``model`` is resolved on every request: ``active`` to the active version's adapter, ``v0`` to
the base model, ``vN`` to its adapter (loaded on first use if evicted). A rollback moves only
this alias: nothing is reloaded anywhere.

Prompt log-probabilities (``echo`` with ``logprobs``, or ``prompt_logprobs``) are sent one at a
time: with ``--enable-lora``, vLLM 0.32's CPU engine dies when several run at once (issue 24:
8 concurrent ones gave 7 HTTP 500s and an ``EngineDeadError`` for every later request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from app.api.openai.protocol import ENGINE_HEADER
from app.store import NotFound, VersionStore
from app.vllm.adapters import ENGINE, AdapterSync, NotServable
from app.vllm.client import VllmUnavailable

"""On every proxied answer, so nobody has to guess whether vLLM or the embedded engine spoke."""
ACTIVE = "active"
_HEADERS = {ENGINE_HEADER: ENGINE}
log = logging.getLogger(__name__)


def openai_error(status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape (what its clients parse), with the engine header."""
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}},
        status_code=status, headers=_HEADERS)


def unavailable(detail: str) -> JSONResponse:
    """503 + ``Retry-After``; ``detail`` (which may name vLLM's URL or the server's paths)
    goes to the log, never to the client."""
    log.warning("vLLM unavailable: %s", detail)
    response = openai_error(
        503, "vLLM, the engine that serves this model, is unavailable; edits and versions "
        "still work and vLLM catches up when it is back. Retry shortly.",
        "service_unavailable", "vllm_unavailable")
    response.headers["Retry-After"] = "2"
    return response


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

    # -- model names ------------------------------------------------------------------------
    def resolve(self, model: str) -> str:
        """The name vLLM knows for ``model``; NotFound for an unknown one."""
        version = self.store.active_version() if model == ACTIVE else model
        try:
            self.store.get_version(version)
        except NotFound:
            if model in (self.sync.base_name, *self.sync.served_names()):
                return model  # vLLM's own name, already resolved
            raise
        return self.sync.ensure(version)

    async def models(self) -> Response:
        """Every usable version (and ``active``) with the engine in ``owned_by``."""
        if not self.sync.up:
            return unavailable(self.sync.last_error or "not reachable yet")
        active = self.store.active_version()
        data = []
        for record in self.store.list_versions():
            if record.state != "committed":
                continue
            state = self.sync.state_of(record.id) or {}
            entry = {"id": record.id, "object": "model", "owned_by": ENGINE,
                     "created": _created(record.created_at), "root": state.get("model"),
                     "serving": state.get("state")}
            data.append(entry)
            if record.id == active:
                data.append({**entry, "id": ACTIVE, "parent": record.id})
        return JSONResponse({"object": "list", "data": data}, headers=_HEADERS)

    # -- forwarding -------------------------------------------------------------------------
    async def forward(self, kind: str, body: Any) -> Response:
        """Send a ``chat`` or ``completions`` request to vLLM; stream it back if asked.

        ``body``: the JSON dict, or the protocol module's parsed request (a pydantic model:
        the fields the client set are sent, extra ones included where the model allows them).
        """
        if hasattr(body, "model_dump"):
            body = body.model_dump(exclude_unset=True)
        try:
            check_request(kind, body)
        except BadRequest as exc:
            return openai_error(400, str(exc), "invalid_request_error", param=exc.param)
        try:
            name = await run_in_threadpool(self.resolve, body["model"])
        except NotFound:
            return openai_error(404, f"model {body['model']!r} does not exist: use 'active', "
                                "'v0' or a version id from GET /v1/models", "invalid_request_error",
                                "model_not_found", "model")
        except NotServable as exc:
            return openai_error(409, str(exc), "invalid_request_error", "model_not_servable",
                                "model")
        except VllmUnavailable as exc:
            return unavailable(str(exc))
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        request = {**body, "model": name}
        if not needs_serialising(request):
            return await self._send(path, request)
        try:  # a bounded wait: a queue of these must not hold clients for minutes
            await asyncio.wait_for(self._serial.acquire(), self.serial_wait_s)
        except TimeoutError:
            response = openai_error(
                429, "requests for prompt log-probabilities run one at a time on vLLM and "
                "another is running; retry shortly", "rate_limit_error", "serialised_busy")
            response.headers["Retry-After"] = "1"
            return response
        self.serialised += 1
        release = _Once(self._serial.release)
        try:  # released on every path: an error, a cancelled request, a stream never read
            return await self._send(path, request, release=release)
        except BaseException:
            release()
            raise

    async def _send(self, path: str, body: dict[str, Any], release: Any = None) -> Response:
        stream = bool(body.get("stream"))
        try:
            upstream = await self._http.send(self._http.build_request("POST", path, json=body),
                                             stream=True)
        except httpx.HTTPError as exc:
            _done(release)
            self.sync.kick()
            return unavailable(type(exc).__name__)
        if upstream.status_code >= 500:
            text = (await upstream.aread()).decode(errors="replace")
            await upstream.aclose()
            _done(release)
            self.sync.kick()
            log.warning("vLLM answered %s: %s", upstream.status_code, text[:500])
            return unavailable(f"it answered {upstream.status_code}")
        headers = {**_HEADERS, "content-type": upstream.headers.get("content-type",
                                                                    "application/json")}
        if not stream:
            content = await upstream.aread()
            await upstream.aclose()
            _done(release)
            return Response(content, status_code=upstream.status_code, headers=headers)
        background = BackgroundTask(_done, release) if release is not None else None
        return StreamingResponse(_relay(upstream, release), status_code=upstream.status_code,
                                 headers=headers, background=background)


async def _relay(upstream: httpx.Response, release: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()
        _done(release)


def _done(release: Any) -> None:
    if release is not None:
        release()


def _created(stamp: str) -> int:
    try:
        return int(time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
    except (TypeError, ValueError):
        return 0
