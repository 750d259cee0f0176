"""The outermost middleware: a request id on every answer, the access log line, and the
retry hint, whatever produced the answer (a route, the body limit, an unexpected error).

- ``x-request-id``: the client's own (when it sent a short, plain one) or a new one, on every
  response and in the access log line, so a user's report can be found in the log;
- ``x-should-retry: false`` on answers no retry can change (400, 404, 409, 413, 422): the
  ``openai`` SDK retries 409 by default and obeys this header;
- an exception no handler took becomes a 500 that reveals nothing, in OpenAI's error shape
  under ``/v1`` and the service's own elsewhere, logged with its traceback and request id.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app.access")

HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NO_RETRY = frozenset({400, 404, 409, 413, 422})
INTERNAL = "internal error; the request was not applied. See the server log"


def internal_error(path: str) -> JSONResponse:
    """The 500 answer for ``path``, in the shape its API speaks."""
    if path.startswith("/v1/"):
        return JSONResponse(status_code=500, content={"error": {
            "message": INTERNAL, "type": "server_error", "param": None, "code": "internal_error"}})
    return JSONResponse(status_code=500, content={"detail": INTERNAL, "errors": []})


def request_id(scope: Scope) -> str:
    given = dict(scope.get("headers") or []).get(HEADER.encode(), b"").decode("latin-1")
    return given if _CLIENT_ID.match(given) else uuid.uuid4().hex


class RequestContext:
    """See the module docstring; install outermost (added last)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = {"code": 0}

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = MutableHeaders(scope=message)
                headers[HEADER] = rid
                if message["status"] in NO_RETRY:
                    headers["x-should-retry"] = "false"
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except Exception:
            if status["code"]:
                raise  # the answer has begun: nothing else can be sent
            log.exception("unhandled error (request_id=%s)", rid)
            await internal_error(scope.get("path", ""))(scope, receive, stamped)
        finally:
            client = scope.get("client")
            log.info('%s "%s %s" %s %.1fms request_id=%s', client[0] if client else "-",
                     scope.get("method"), scope.get("path"), status["code"] or "-",
                     (time.perf_counter() - started) * 1000, rid)
