"""Per-caller concurrency for queries: one client cannot take every row of the engine.

A caller is its read token (a hash of it) when reads need a token, else its client address;
``X-Forwarded-For`` is believed only when the connection comes from a configured proxy
(``MODELEDIT_TRUSTED_PROXIES``), so a client cannot pick another's address. The count is per
API process and covers the whole answer, streamed ones included.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter

from starlette.types import ASGIApp, Receive, Scope, Send

QUERY_PATHS = frozenset({"/score", "/generate", "/next-tokens", "/v1/completions",
                         "/v1/chat/completions"})


def client_address(scope: Scope, trusted: frozenset[str]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = scope.get("client")
    address = peer[0] if peer else "unknown"
    if address not in trusted:
        return address
    forwarded = dict(scope.get("headers") or []).get(b"x-forwarded-for", b"").decode("latin-1")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if hop not in trusted:
            return hop
    return address


def caller_key(scope: Scope, by_token: bool, trusted: frozenset[str]) -> str:
    if by_token:
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        if auth.lower().startswith(b"bearer "):
            return "token:" + hashlib.sha256(auth[7:].strip()).hexdigest()[:16]
    return "ip:" + client_address(scope, trusted)


class CallerLimit:
    """At most ``limit`` queries in flight per caller (0: no limit); more is a 429."""

    def __init__(self, app: ASGIApp, limit: int, by_token: bool, trusted: frozenset[str]):
        self.app, self.limit, self.by_token, self.trusted = app, limit, by_token, trusted
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.limit or scope["method"] != "POST"
                or scope.get("path") not in QUERY_PATHS):
            await self.app(scope, receive, send)
            return
        key = caller_key(scope, self.by_token, self.trusted)
        with self._lock:
            admitted = self._in_flight[key] < self.limit
            if admitted:
                self._in_flight[key] += 1
        if not admitted:
            await self._refuse(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self._in_flight[key] -= 1
                if not self._in_flight[key]:
                    del self._in_flight[key]

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = (f"this caller already has {self.limit} queries in flight (the per-caller "
                   "limit, MODELEDIT_MAX_QUERIES_PER_CALLER); wait for one to finish")
        if scope["path"].startswith("/v1/"):
            content: dict = {"error": {"message": message, "type": "rate_limit_error",
                                       "param": None, "code": "too_many_concurrent_requests"}}
        else:
            content = {"detail": message, "errors": []}
        body = json.dumps(content).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", b"1"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
