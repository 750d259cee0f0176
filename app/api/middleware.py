"""ASGI middleware: a byte limit on request bodies, and request metrics.

The body limit is enforced before any parsing, on the bytes actually received (a client may
lie in or omit ``Content-Length``), so an oversize body costs at most ``limit`` bytes of memory.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Answer 413 to any request whose body exceeds ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        """413, in OpenAI's error shape under /v1 and the service's own elsewhere."""
        message = (f"request body is larger than {self.limit} bytes; send less per request "
                   "(or ask the operator to raise MODELEDIT_MAX_BODY_BYTES)")
        if scope.get("path", "").startswith("/v1/"):
            content: dict[str, Any] = {"error": {
                "message": message, "type": "invalid_request_error", "param": None,
                "code": "request_too_large"}}
        else:
            content = {"detail": message,
                       "errors": [{"field": "body", "message": f"at most {self.limit} bytes"}]}
        body = json.dumps(content).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Count requests and time them per route template (not per raw path: ids would explode
    the label set)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram):
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.latency.labels(scope["method"], path).observe(time.perf_counter() - started)
